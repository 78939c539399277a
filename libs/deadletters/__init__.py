"""The dead-letter ledger: record, list, replay and purge jobs that failed for good."""
