"""Alert sources: Prometheus Alertmanager and Grafana webhooks read as reports."""
