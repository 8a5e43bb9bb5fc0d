"""Pure logic: no I/O, no Django, no NATS. Everything here is tested by feeding values."""
