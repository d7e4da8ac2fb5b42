"""Frozen value types, the policy model, reason codes and errors.

This package performs no I/O and imports no database, web, Kubernetes, Prometheus or
scheduler library.
"""
