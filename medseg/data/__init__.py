"""Data: reading volumes (io.py), datasets and datalists, MONAI transforms, caching, checks, the Lightning
DataModule, the Plan a checkpoint carries (plan.py), `medseg check-data` (fingerprint.py) and dataset conversion
(conversion/)."""
