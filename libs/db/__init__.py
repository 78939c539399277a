"""Relational state: models, engine/session factory and migrations."""
