"""Webhook ingestion: durable acceptance at the edge, idempotent processing in the worker."""
