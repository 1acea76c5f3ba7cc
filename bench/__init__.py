"""Benchmarks of lipservice-proxy: `python -m bench --quick` for the headline figures (bench/README.md)."""
