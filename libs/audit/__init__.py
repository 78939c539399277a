"""The audit log: every change made through the API or the CLI (:mod:`libs.audit.store`)."""
