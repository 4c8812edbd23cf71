"""Rollouts as a service: their store (SQLite or PostgreSQL, beside jobs and keys) and the loop that
runs the controller (``tierserve.rollout``) on the engine's observations."""
