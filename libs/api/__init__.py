"""The producer + ops HTTP API (Starlette): handlers live here, ``services/api/app.py`` only builds the app."""
