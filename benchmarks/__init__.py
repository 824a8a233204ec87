"""Benchmarks: measurements that print one JSON line per figure, then a readable table."""
