"""Benchmarks for redis-streaming: events/s and ratios against raw redis-py and peer libraries.

Run with ``python -m bench`` (or ``make bench``). It starts its own private servers and never
asserts timings; tests only check that ``python -m bench --smoke`` runs.
"""
