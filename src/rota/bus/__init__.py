"""NATS: the embedded server, the connection, and every stream, bucket and subject
rota uses (documented in docs/nats.md)."""
