"""The tables `medseg bench` prints from its records: ratios to the conv row, the plain-text renderer (which
`medseg search` reuses for its summary) and the header that states what was measured."""

import json

RATIOS = (("params", "params_x"), ("flops", "flops_x"), ("train_ms", "train_x"), ("peak_mib", "peak_x"),
          ("train_peak_mib", "train_peak_x"))


def add_ratios(records: list[dict], time_key: str) -> None:
    """params_x, flops_x, time_x, train_x and the peak-memory ratios against the conv row of the same table and arch
    (None without one, or where a value is missing)."""
    for r in records:
        ref = next((c for c in records if c["block"] == "conv" and (c["table"], c["arch"]) == (r["table"], r["arch"])),
                   None)
        for key, out in (*RATIOS, (time_key, "time_x")):
            have = ref is not None and r.get(key) is not None and ref.get(key)
            r[out] = r[key] / ref[key] if have else None


def render(records: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Plain-text table; columns are (header, record key, format spec), numbers right-aligned."""
    cells = [[h for h, _, _ in columns]]
    cells += [["–" if r[k] is None else format(r[k], f) for _, k, f in columns] for r in records]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    text = [not spec for _, _, spec in columns]  # text columns left-aligned
    lines = ["  ".join(c.ljust(w) if left else c.rjust(w) for c, w, left in zip(row, widths, text, strict=True))
             for row in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def report(records: list[dict], time_key: str) -> str:
    unit = time_key.removesuffix("_ms")
    cost = [("params", "params", ","), ("×", "params_x", ".2f"), ("GFLOP", "gflop", ".2f"), ("×", "flops_x", ".2f"),
            (f"{unit} ms", time_key, ".0f"), ("×", "time_x", ".2f"), ("peak MiB", "peak_mib", ".0f"),
            ("×", "peak_x", ".2f")]
    train = [("train ms", "train_ms", ".0f"), ("×", "train_x", ".2f"), ("train MiB", "train_peak_mib", ".0f"),
             ("×", "train_peak_x", ".2f")]
    rows = [{**r, "gflop": r["flops"] / 1e9} for r in records]
    nets = [r for r in rows if r["table"] == "net"]
    layers = [r for r in rows if r["table"] == "layer"]
    parts = []
    if nets:
        parts.append(render(nets, [("arch", "arch", ""), ("block", "block", ""), *cost, *train]))
    if layers:
        size = "×".join(map(str, layers[0]["shape"]))
        width = layers[0]["in_channels"]
        parts.append(f"one {width}→{width} k=3 layer at {size}:\n"
                     + render(layers, [("block", "block", ""), *cost]))
    return "\n\n".join(parts)


def header(records: list[dict], shape: tuple[int, int, int], patch: list[int], batch: int, in_channels: int) -> str:
    """What was measured and how, so a pasted table carries its conditions."""
    first = records[0]
    changed = {r["block"]: r["block_kwargs"] for r in records if r.get("block_kwargs")}
    options = "".join(f"\n{block} built with {json.dumps(kwargs)}" for block, kwargs in changed.items())
    size, patch_size = "×".join(map(str, shape)), "×".join(map(str, patch))
    layout = ", channels_last_3d" if first["channels_last"] else ""
    compiled = ", torch.compile" if first["compile"] else ""
    return (f"{first['device']}, {first['threads']} threads, {first['dtype']}{layout}{compiled}, widths "
            f"{first['widths']}; prediction of a {in_channels}×{size} volume: {first.get('windows', 0)} windows of "
            f"{patch_size}, overlap {first.get('overlap')}, sw_batch_size {first['sw_batch_size']}; training step: "
            f"{batch} patches, DiceCE, AdamW; medians of {first['repeats']} rounds (every net once per round) after a "
            f"warm-up\n"
            f"FLOPs: one {patch_size} patch forward; × = ratio to conv in the same arch\n"
            f"peak memory: {first['mem_method']}{options}")
