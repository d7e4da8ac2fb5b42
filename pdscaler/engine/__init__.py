"""The pure decision engine.

This package performs no I/O: no database, HTTP, Kubernetes, Prometheus or clock reads.
Everything it needs, including ``now``, is passed in, and it returns new values.
"""
