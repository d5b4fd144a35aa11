"""Writing captures in the raw layouts the readers take (used by synthetic data, tests, benchmarks)."""
