"""Speed and memory benchmarks: `python -m bench.NAME` from the repository root."""
