"""Training: `medseg train` (cli.py), the LightningModule (module.py), checkpoint callbacks and atomic checkpoint
writing (callbacks.py), and experiment tracking (tracking.py)."""
