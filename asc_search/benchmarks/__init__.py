"""Benchmarks: each module has run() -> dict of measured figures (no printing); `asc-search bench` collects them."""
