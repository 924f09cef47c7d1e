"""Scoring masks against ground truth: the metrics (metrics.py) and `medseg evaluate` over folders (evaluate.py)."""
