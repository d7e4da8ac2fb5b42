"""The REST API (FastAPI): thin routes over the stores; errors mapped to HTTP in errors.py."""
