"""Metric sources behind the ``MetricsSource`` protocol (Prometheus in production)."""
