"""API keys: their format, scopes, storage (hashed) and verification (:mod:`libs.access.keys`)."""
