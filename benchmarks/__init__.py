"""Benchmarks: the store against the original file tree, measured side by side in one run."""
