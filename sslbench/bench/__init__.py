"""Benchmarks that print JSON rows (speed and memory of library pieces)."""
