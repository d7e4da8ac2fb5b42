"""Grafana dashboard generation, annotations and deep links."""
