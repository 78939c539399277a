"""Operations: the ``zapq`` CLI, the demo, queue stats and dead-letter tooling."""
