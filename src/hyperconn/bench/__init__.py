"""Benchmarks and the naive reference implementation they (and the tests) compare against."""
