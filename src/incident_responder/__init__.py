"""incident-responder: dedup incidents, find runbooks, recommend fixes."""

__version__ = "0.1.0"
