"""HTML reports of predictions and evaluations (offline, self-contained pages)."""
