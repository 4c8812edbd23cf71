"""Helpers shared by the test suites (server launcher, test-only models)."""
