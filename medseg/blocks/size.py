"""Per-axis kernel/stride helpers shared by every block."""

Size3 = int | tuple[int, int, int] | list[int]


def triple(value: Size3) -> tuple[int, int, int]:
    """Expand an int or a 3-sequence to a per-axis tuple."""
    if isinstance(value, int):
        return (value, value, value)
    if len(value) != 3:
        raise ValueError(f"expected an int or 3 values, got {value!r}")
    return tuple(int(v) for v in value)


def same_padding(kernel: tuple[int, int, int]) -> tuple[int, int, int]:
    """Padding that keeps ceil(L / s) outputs for odd kernels (blocks-spec §1 shape-alignment rule)."""
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(f"kernel sizes must be odd, got {kernel}")
    return tuple(k // 2 for k in kernel)
