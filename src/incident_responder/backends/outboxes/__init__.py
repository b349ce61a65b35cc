"""The notification outbox: ``sqlite`` (one local file) and ``redis`` (shared by replicas)."""
