"""`--report`: one self-contained, offline HTML page per case (and an index for a folder of cases).

A page needs nothing beside it and makes no request: the NiiVue viewer (medseg/report/vendor, BSD-2) is embedded
gzipped and base64-encoded and imported from a blob: URL; the scan channels and the mask are embedded as gzipped
NIfTI. To keep a page small, the volumes are cropped to the box of non-zero voxels (the skull-stripped brain) plus
2 voxels, the scans are stored as uint8 between the 0.5th and 99.5th percentiles of the brain (the preview's
window), and a volume larger than MAX_VOXELS after cropping is subsampled by an integer stride on every axis (a
BraTS case at 1 mm, 240x240x155, needs no stride: 4.7 MB for BraTS2021_00006). Without WebGL2 the page shows the preview
PNG (medseg.inference.preview) and says why. `window.medsegReady` becomes true once the viewer has drawn or the
fallback is shown, so the page can be tested headless.
"""

import base64
import datetime
import gzip
import html
import json
import tempfile
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from string import Template

import nibabel as nib
import numpy as np

import medseg
from medseg.evaluation.metrics import prediction_regions
from medseg.inference.preview import REGION_COLOURS, lesion_centre, window, write_preview
from medseg.labels import get_convention
from medseg.models import cards
from medseg.utils.files import atomic_write

MAX_VOXELS = 16_000_000  # per embedded volume after cropping; above it every axis is subsampled by a stride
FLAG_TEXT = {
    "empty_prediction": "no voxel was segmented",
    "implausible_volume": "the lesion is implausibly small or takes too large a share of the brain",
    "touches_edge": "the lesion reaches the edge of the imaged field: part of it may be cut off",
    "outside_brain": "part of the lesion lies outside the brain (the non-zero region of the scan)",
    "bilateral_symmetric": "the lesion lies in both hemispheres, mirror-symmetric: normal anatomy painted?",
    "intensity_shift": "the scan's intensities differ from the training data's (channels swapped, another "
                       "sequence, or another protocol?)",
    "brain_shape": "the brain's extent is unlike the training scans' (wrong orientation, or part of it missing?)",
    "high_disagreement": "the mirrored predictions disagree: the mask is uncertain",
}


@cache
def viewer_js() -> str:
    """The vendored NiiVue module, gzipped and base64-encoded (embedded in every page)."""
    source = resources.files("medseg.report").joinpath("vendor/niivue.min.js").read_bytes()
    return base64.b64encode(gzip.compress(source, 9, mtime=0)).decode("ascii")


def page_template() -> Template:
    return Template(resources.files("medseg.report").joinpath("case.html").read_text())


def esc(value: object) -> str:
    return html.escape(str(value))


def table(header: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[bool] | None = None,
          attrs: str = "") -> str:
    """An HTML table of already-formatted cells (escaped here); numeric columns are right-aligned."""
    numeric = numeric or [False] * len(header)
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td{" class=num" if n else ""}>{esc(c)}</td>' for c, n in zip(r, numeric,
                                                                                                   strict=True))
                   + "</tr>" for r in rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def crop_box(image: np.ndarray) -> tuple[tuple[slice, ...], int]:
    """The non-zero box of a (C, X, Y, Z) image plus 2 voxels, and the stride that keeps it under MAX_VOXELS."""
    nonzero = np.argwhere(np.any(image != 0, axis=0))
    if nonzero.size:
        low = np.maximum(nonzero.min(0) - 2, 0)
        high = np.minimum(nonzero.max(0) + 3, image.shape[1:])
    else:
        low, high = np.zeros(3, int), np.array(image.shape[1:])
    stride = max(1, int(np.ceil((float(np.prod(high - low)) / MAX_VOXELS) ** (1 / 3))))
    return tuple(slice(int(a), int(b), stride) for a, b in zip(low, high, strict=True)), stride


def nifti_b64(array: np.ndarray, affine: np.ndarray, box: tuple[slice, ...]) -> str:
    """A (X, Y, Z) uint8 array cropped/subsampled by `box`, as base64 gzipped NIfTI with the matching affine."""
    step = np.diag([box[0].step, box[1].step, box[2].step, 1]).astype(float)
    step[:3, 3] = [s.start for s in box]
    img = nib.Nifti1Image(np.ascontiguousarray(array[box]).astype(np.uint8), affine @ step)
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, 1)
    img.set_sform(img.affine, 1)
    return base64.b64encode(gzip.compress(img.to_bytes(), 6, mtime=0)).decode("ascii")


def display_labels(labels: np.ndarray, convention: str) -> tuple[np.ndarray, list[str]]:
    """The mask as 1 + index of the innermost region of each voxel (later regions painted over earlier ones),
    so the viewer's colours are the preview's and the legend's; and the region names."""
    masks = prediction_regions(labels, get_convention(convention))
    out = np.zeros(labels.shape, np.uint8)
    for i, mask in enumerate(masks.values()):
        out[mask] = i + 1
    return out, list(masks)


def colour(i: int) -> tuple[int, int, int]:
    return REGION_COLOURS[i % len(REGION_COLOURS)]


def preview_uri(image: np.ndarray, labels: np.ndarray, convention: str, affine: np.ndarray) -> str:
    """The static preview (medseg.inference.preview) as a data: URI, the page's fallback without WebGL2."""
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "preview.png"
        write_preview(np.moveaxis(image, 0, -1), labels, convention, png, zooms, affine)
        return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def qc_html(qc: Mapping | None) -> str:
    """The score, each flag with the reason it matters, and the members' disagreement per region."""
    if not qc:
        return "<p>Not computed for this model.</p>"
    flags = qc["flags"]
    verdict = (f'<p class="qc-flag">{len(flags)} flag(s): check this mask before using it.</p><ul>'
               + "".join(f"<li><b>{esc(f)}</b>: {esc(FLAG_TEXT.get(f, f))}</li>" for f in flags) + "</ul>"
               if flags else '<p class="qc-ok">No flag raised.</p>')
    agreement = qc["details"]["disagreement"]
    rows = [(r, f"{v['vvc']:.3f}", f"{v['mean_sd']:.3f}", ", ".join(f"{x:.1f}" for x in v["volumes_ml"]))
            for r, v in agreement["regions"].items()]
    return (f"<p>QC score <b id=qc-score>{qc['score']:.4f}</b> (higher = less trustworthy; from the disagreement "
            f"of {agreement['members']} mirrored predictions; see docs/report-qc.md).</p>" + verdict
            + table(["region", "volume variation coefficient", "mean SD inside", "member volumes (mL)"], rows,
                    [False, True, True, False]))


def model_html(source: Path, plan) -> str:
    """The model card of a bundled model (medseg/models/cards.json), else what the checkpoint's plan says."""
    rows = [("checkpoint", source.name), ("network", f"{plan.arch} ({plan.net.get('block', '')})"),
            ("inputs", ", ".join(plan.modalities)), ("labels", plan.label_convention),
            ("spacing (mm)", plan.spacing or "native"), ("patch", "x".join(map(str, plan.patch_size)))]
    for name, card in cards().items():
        if card["file"] == source.name and source.parent == Path(str(resources.files("medseg.models"))):
            rows = [("name", name), ("what", card["description"]), ("outputs", card["outputs"]),
                    ("measured", card["measured"]), ("data and licence", card["licence"])] + rows
    return table(["", ""], rows)


def inputs_html(prediction, modalities: Sequence[str]) -> str:
    """Which file fed each channel, and the grid they share (the mask's: shape, voxel size, orientation, affine)."""
    files = [(m, c.path + (f" [channel {c.index}]" if c.index is not None else ""))
             for m, c in zip(modalities, prediction.channels, strict=True)]
    affine = prediction.reference.affine
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    grid = [("shape", " x ".join(map(str, prediction.image.shape[1:]))),
            ("voxel size (mm)", ", ".join(f"{z:.4g}" for z in zooms)),
            ("orientation", "".join(nib.aff2axcodes(affine))),
            ("affine", "; ".join(" ".join(f"{v:.4g}" for v in row) for row in affine[:3]))]
    return table(["channel", "file"], files) + table(["grid (every channel and the mask)", ""], grid)


def script_json(value: object) -> str:
    """JSON safe inside a <script> element (which HTML escaping does not reach)."""
    return json.dumps(value).replace("</", "<\\/")


def volumes_html(stats: Mapping) -> str:
    rows = [(r, v["voxels"], f"{v['volume_ml']:.3f}") for r, v in stats.items() if r != "qc"]
    return table(["region", "voxels", "volume (mL)"], rows, [False, True, True], ' id="volumes"')


def embedding_note(box: tuple[slice, ...], stride: int) -> str:
    size = " x ".join(str(len(range(s.start, s.stop, s.step))) for s in box)
    every = f", every {stride}th voxel on each axis" if stride > 1 else ""
    return (f"Embedded volumes: cropped to the non-zero box plus 2 voxels ({size} voxels{every}); scans as 8-bit "
            "between their 0.5th and 99.5th brain percentiles.")


def write_case_report(predictor, prediction, labels: np.ndarray, stats: Mapping, out: Path,
                      index: str | None = None) -> None:
    """One case's page (see the module docstring); `index`: the relative link back to a folder's index page."""
    plan, reference = predictor.plan, prediction.reference
    convention, affine = plan.label_convention, reference.affine
    box, stride = crop_box(prediction.image)
    shown, names = display_labels(labels, convention)
    lut = {"R": [0], "G": [0], "B": [0], "A": [0], "I": [0], "labels": ["background"]}
    for i, name in enumerate(names):
        r, g, b = colour(i)
        for key, v in zip("RGBAI", (r, g, b, 255, i + 1), strict=True):
            lut[key].append(v)
        lut["labels"].append(name)
    centre = lesion_centre(labels > 0) if np.any(labels) else tuple(s // 2 for s in labels.shape)
    spec = {"channels": [{"name": m, "nifti": nifti_b64(window(prediction.image[c]), affine, box)}
                         for c, m in enumerate(plan.modalities)],
            "mask": {"nifti": nifti_b64(shown, affine, box), "lut": lut},
            "centre_mm": [float(v) for v in (affine @ [*centre, 1])[:3]]}
    whole = next((v for r, v in stats.items() if r != "qc"), None)
    summary = (f"{esc(names[0])} {whole['volume_ml']:.1f} mL; " if whole else "") + \
        f"predicted in {prediction.seconds:.1f} s ({'8 mirrorings (--tta)' if predictor.tta else 'one pass'})."
    legend = " ".join(f'<span class="swatch" style="background: rgb{colour(i)}"></span>{esc(n)}'
                      for i, n in enumerate(names))
    page = page_template().substitute(
        title=esc(f"{Path(out).stem}: {Path(reference.path).name}"), summary=summary + " Colours: " + legend,
        back=f'<a href="{esc(index)}">all cases</a>' if index else "",
        qc=qc_html(stats.get("qc")),
        channel_options="".join(f'<option value="{c}">{esc(m)}</option>' for c, m in enumerate(plan.modalities)),
        preview=preview_uri(prediction.image, labels, convention, affine),
        embedding=esc(embedding_note(box, stride)),
        volumes=volumes_html(stats), model=model_html(predictor.source, plan),
        inputs=inputs_html(prediction, plan.modalities),
        version=esc(medseg.__version__), date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        stats_json=script_json(stats), volumes_json=script_json(spec), viewer_js=viewer_js())
    atomic_write(Path(out), lambda p: p.write_text(page))


def write_index(folder: Path, cases: Mapping[str, Mapping | None]) -> Path:
    """`index.html` of a folder of case pages: a row per case (region volumes, QC score and flags, link)."""
    regions = next((list(r for r in s if r != "qc") for s in cases.values() if s), [])
    rows = []
    for case, stats in cases.items():
        link = f'<a href="{esc(case)}.html">{esc(case)}</a>'
        if stats is None:
            rows.append(f"<tr><td>{link}</td>" + "<td></td>" * (len(regions) + 2) + "<td>earlier run</td></tr>")
            continue
        qc = stats.get("qc") or {}
        cells = "".join(f"<td class=num>{stats[r]['volume_ml']:.2f}</td>" for r in regions)
        score = f"{qc['score']:.4f}" if qc else ""
        rows.append(f"<tr><td>{link}</td>{cells}<td class=num>{score}</td><td>{esc(', '.join(qc.get('flags', [])))}"
                    "</td><td></td></tr>")
    head = "".join(f"<th>{esc(r)} (mL)</th>" for r in regions)
    page = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>medseg: {len(cases)} cases</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:1.2em}td,th{border:1px solid #ccc;padding:.2em .6em}"
            "table{border-collapse:collapse}td.num{text-align:right}</style></head><body>"
            f"<h1>{len(cases)} cases</h1><table><thead><tr><th>case</th>{head}<th>QC score</th><th>QC flags</th>"
            f"<th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"<p>Made by medseg {esc(medseg.__version__)}.</p></body></html>")
    out = folder / "index.html"
    atomic_write(out, lambda p: p.write_text(page))
    return out
