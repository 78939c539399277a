"""zapq's benchmarks: ``python -m bench [SCENARIO…] [--quick]`` (see ``bench/README.md``)."""
