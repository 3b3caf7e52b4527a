"""Ingest: parse and validate events, user state, dead letters, popularity, the ingest agent."""
