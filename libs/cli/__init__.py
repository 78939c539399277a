"""The ``zapq`` command line, one module per group of commands.

* :mod:`libs.cli.main` — the parser and the entry point (the ``zapq`` console script; ``python -m libs.cli``);
* :mod:`libs.cli.output` — exit codes, :class:`~libs.cli.output.UsageError`, tables and JSON output;
* :mod:`libs.cli.api` — the HTTP client of the commands that drive zapq's API, and its exit codes;
* one module per group, each with a ``register(subparsers)``: :mod:`~libs.cli.migrate`,
  :mod:`~libs.cli.stats` (``stats``, ``job``, ``top``), :mod:`~libs.cli.campaign`, :mod:`~libs.cli.send`
  (``send``, ``retry``), :mod:`~libs.cli.events`, :mod:`~libs.cli.endpoints`, :mod:`~libs.cli.demo`,
  :mod:`~libs.cli.dlq`.

Imports go one way: ``main`` → command modules → ``api`` → ``output``; nothing outside ``libs/cli`` imports
from it (durations and ``--since`` times are parsed by :mod:`libs.timeparse`, which the API shares).
"""
