"""Runnable examples built on tierserve."""
