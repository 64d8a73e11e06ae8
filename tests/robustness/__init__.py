"""Robustness and safety: bad inputs through the whole train/evaluate chain, crash-safe files,
memory estimates, safe model loading and pickle-free artifacts (GitHub issue 7)."""
