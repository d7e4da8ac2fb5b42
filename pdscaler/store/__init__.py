"""Persistence: SQLAlchemy 2.0 rows and repositories (Postgres; SQLite embedded).

The schema is owned by Alembic (``migrations/``); nothing here creates tables.
"""
