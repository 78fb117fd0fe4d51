"""Benchmarks beyond the per-image strategy table (explainer/bench.py): throughput, cost growth, peers."""
