"""Coordination in NATS KV: leases (leader, subleader per node), the leader
epoch, worker registry views, operator marks and the settings every process
follows. Leadership rests on the result of a compare-and-set, never a read."""
