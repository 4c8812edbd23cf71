"""Durable async jobs: stores (SQLite, PostgreSQL), leases, retries, dead letters, the job service."""
