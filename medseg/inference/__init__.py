"""Prediction: the Predictor, `medseg predict` (run.py), chunked EM prediction (chunked.py), and writers for
probability maps (outputs.py), previews and statistics (preview.py)."""
