"""Prediction: the Predictor, and writers for masks, probabilities, previews and statistics."""
