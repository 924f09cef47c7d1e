"""CPU fast paths the blocks run on: a layout-keeping instance norm with a GEMM backward (norm.py), a depthwise
conv with faster gradients (depthwise.py), convolutions whose kernel is rebuilt in the backward (built.py), and the
fused forms of CAKES, PmSCn and SIC (one conv for all ops or streams; SIC's norm folded into its projection).

Each computes what the reference PyTorch path computes (to float rounding) and applies only where it was measured
faster: float32, channels_last_3d, on the CPU (docs/dev/cpu-performance.md). One switch turns all of them off, as
timm's `set_fast_norm` does, e.g. to rule them out when a result looks wrong:

    import medseg.ops
    medseg.ops.set_fast_paths(False)   # every block runs plain PyTorch ops
"""

_FAST_PATHS = True


def set_fast_paths(enabled: bool = True) -> bool:
    """Turn the CPU fast paths on or off for the whole process; returns the previous setting."""
    global _FAST_PATHS
    previous, _FAST_PATHS = _FAST_PATHS, bool(enabled)
    return previous


def fast_paths_enabled() -> bool:
    return _FAST_PATHS
