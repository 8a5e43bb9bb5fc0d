"""Every NATS name rota uses, in one place. docs/nats.md documents each one.

Streams
  ROTA_WORK       subjects ``rota.work.tag.<tag>`` (and ``rota.work.worker.<id>``
                  for pinned runs); work-queue retention: a message is removed when
                  a worker acks it. Payload: the run's snapshot plus its KV revision.
                  ``Nats-Msg-Id`` = ``<run_id>:<attempt>``.
  ROTA_DLQ        subjects ``rota.dlq.<reason>``; runs that cannot run.
  ROTA_LOGS       subjects ``rota.logs.<run_id>``; a running run's output in
                  chunks ``{"a": attempt, "s": stream, "d": text}``, then
                  ``{"a": attempt, "eof": true}``; kept a day (rota.runs.logs).
KV buckets
  rota_runs       ``run.<run_id>`` → live RunSnapshot (JSON). Compare-and-set on the
                  revision for every transition. Its stream ``KV_rota_runs`` is read by
                  the projector's durable consumer ``rota_projector``.
  rota_workers    ``<worker_id>`` → registry entry (JSON), outlives the heartbeat.
  rota_heartbeats ``<worker_id>`` → heartbeat, rewritten every heartbeat interval;
                  its server timestamp is what ages are measured by.
  rota_leases     ``leader`` and ``subleader.<node>`` → lease holder (JSON); bucket
                  max age = the lease TTL, so an unrenewed lease disappears.
  rota_coordination ``epoch`` (leader epoch counter), ``settings`` (thresholds),
                  ``detached.<worker_id>``, ``hidden.<worker_id>``, ``degrade``,
                  ``clock`` (a write whose timestamp is the server's now),
                  ``metrics.histograms`` (run timing histograms: the leader's
                  projector saves them, a new leader continues from them, and
                  ``/metrics`` reads them).
Object stores
  rota_logs       archived run logs (``<run_id>/<attempt>/<stream>``).
"""

from __future__ import annotations

from rota.domain.ids import safe_token

WORK_STREAM = "ROTA_WORK"
WORK_PREFIX = "rota.work"
DLQ_STREAM = "ROTA_DLQ"
DLQ_PREFIX = "rota.dlq"
LOGS_STREAM = "ROTA_LOGS"
LOGS_PREFIX = "rota.logs"

RUNS_BUCKET = "rota_runs"
WORKERS_BUCKET = "rota_workers"
HEARTBEATS_BUCKET = "rota_heartbeats"
LOGS_STORE = "rota_logs"
LEASES_BUCKET = "rota_leases"
COORD_BUCKET = "rota_coordination"

LEADER_KEY = "leader"
EPOCH_KEY = "epoch"
SETTINGS_KEY = "settings"
DEGRADE_KEY = "degrade"
CLOCK_KEY = "clock"
METRICS_HISTOGRAMS_KEY = "metrics.histograms"

PROJECTOR_CONSUMER = "rota_projector"

KV_BUCKETS = (RUNS_BUCKET, WORKERS_BUCKET, HEARTBEATS_BUCKET, LEASES_BUCKET, COORD_BUCKET)
OBJECT_STORES = (LOGS_STORE,)


def jetstream_streams() -> list[tuple[str, str, str]]:
    """Every JetStream stream that holds rota's data, as (stream, kind, rota's name):
    a KV bucket ``b`` lives in stream ``KV_b``, an object store ``o`` in ``OBJ_o``."""
    return [
        *((s, "stream", s) for s in (WORK_STREAM, DLQ_STREAM, LOGS_STREAM)),
        *((f"KV_{b}", "kv", b) for b in KV_BUCKETS),
        *((f"OBJ_{o}", "objects", o) for o in OBJECT_STORES),
    ]


def work_subject(tag: str) -> str:
    return f"{WORK_PREFIX}.tag.{safe_token(tag)}"


def pinned_subject(worker_id: str) -> str:
    return f"{WORK_PREFIX}.worker.{safe_token(worker_id)}"


def work_consumer(tag: str) -> str:
    """The durable pull consumer shared by every worker serving ``tag``."""
    return f"work_{safe_token(tag)}"


def dlq_subject(reason: str) -> str:
    return f"{DLQ_PREFIX}.{safe_token(reason)}"


def log_subject(run_id: str) -> str:
    return f"{LOGS_PREFIX}.{safe_token(run_id)}"


def subleader_key(node_id: str) -> str:
    return f"subleader.{safe_token(node_id)}"


def detached_key(worker_id: str) -> str:
    return f"detached.{safe_token(worker_id)}"


def hidden_key(worker_id: str) -> str:
    return f"hidden.{safe_token(worker_id)}"


def run_key(run_id: str) -> str:
    return f"run.{run_id}"


def run_id_from_subject(subject: str) -> str:
    """``$KV.rota_runs.run.<id>`` → ``<id>``."""
    return subject.rsplit(".", 1)[-1]
