"""The incident-responder benchmark (see bench/README.md)."""
