"""Synthetic multi-view head captures built from real portraits (see datasets/synthetic.py)."""
