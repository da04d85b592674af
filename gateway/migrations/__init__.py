"""Alembic's scripts for the gateway's database (run through gateway/migrate.py)."""
