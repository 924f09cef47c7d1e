"""`medseg bench`: the benchmark command (run.py), its tables (tables.py), timing and memory measurement
(measure.py) and FLOP counting (flops.py, also used by `medseg search`)."""
