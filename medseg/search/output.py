"""The configuration file `medseg search` writes (docs/specs/blocks-spec.md §3.7 [Rec]) and the summary it prints."""

import json
from pathlib import Path

from medseg.bench.tables import render
from medseg.blocks.cakes import CONFIG_SCHEMA, OPS, op_kernel
from medseg.search.cost import Layer, Split
from medseg.utils.files import write_json

AXES = ("op names give the kernel over the spatial axes (S0, S1, S2) of (N, C, S0, S1, S2), the array axes after "
        "RAS reorientation (S2 is through-plane for axial scans): '3' keeps the layer's kernel size on that axis, "
        "'1' drops it; 'ops' lists the kernels for a base kernel of 3")


def configuration(layers: list[Layer], splits: dict[str, Split], provenance: dict) -> dict:
    """The JSON document: schema, op vocabulary, per-layer split keyed by qualified module name, provenance."""
    used = {op for layer in layers for op in layer.ops}
    return {
        "schema": CONFIG_SCHEMA,
        "axes": AXES,
        "ops": {op: list(op_kernel(op, (3, 3, 3))) for op in OPS if op in used},
        "layers": {layer.name: {"ops": splits[layer.name], "in": layer.c_in, "out": layer.c_out} for layer in layers},
        "provenance": provenance,
    }


def dumps(value, indent: int = 0) -> str:
    """JSON, one entry per line, but lists and mappings that hold no containers (a kernel, a layer's {op: channels})
    on one line each."""
    children = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else []
    if not any(isinstance(v, dict | list) for v in children):
        return json.dumps(value)
    pad = " " * (indent + 1)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    return "[\n" + ",\n".join(pad + dumps(v, indent + 1) for v in value) + "\n" + " " * indent + "]"


def write_configuration(path: Path, data: dict) -> None:
    """The configuration file, in the compact layout of `dumps`, written atomically."""
    write_json(path, data, dumps=dumps)


def stage(name: str) -> str:
    """Group key of a layer for the summary: `encoder.1.0.0` → `encoder.1`, `stem.0` → `stem`."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1].isdigit() else parts[0]


def mix_table(layers: list[Layer], splits: dict[str, Split]) -> str:
    """Channels per op, summed per stage and over the network."""
    ops = [op for op in OPS if any(op in layer.ops for layer in layers)]
    rows: dict[str, dict] = {}
    for layer in layers:
        for key in (stage(layer.name), "all"):
            row = rows.setdefault(key, {"stage": key, "layers": 0, **dict.fromkeys(ops, 0)})
            row["layers"] += 1
            for op, c in splits[layer.name].items():
                row[op] += c
    rows["all"] = rows.pop("all")  # last
    return render(list(rows.values()), [("stage", "stage", ""), ("layers", "layers", "d")]
                  + [(op, op, "d") for op in ops])


def cost_table(all_3d: dict[str, int], searched: dict[str, int], patch: list[int]) -> str:
    rows = [{"net": name, "params": c["params"], "px": c["params"] / all_3d["params"], "gflop": c["flops"] / 1e9,
             "fx": c["flops"] / all_3d["flops"]} for name, c in (("all-3D (conv)", all_3d), ("searched", searched))]
    patch_size = "×".join(map(str, patch))
    return render(rows, [("net", "net", ""), ("params", "params", ","), ("×", "px", ".3f"),
                         (f"GFLOP/{patch_size}", "gflop", ".2f"), ("×", "fx", ".3f")])
