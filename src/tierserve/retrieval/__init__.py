"""Retrieval: text embeddings through the engine, vector collections, filtered search, re-ranking."""
