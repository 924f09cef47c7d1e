"""Label conventions: which label values a dataset uses, the regions trained on, and the way back to labels.

Training is multi-label (one sigmoid channel per region, nested for BraTS); a convention decodes region masks
back into the dataset's own label values so a predicted mask reads like the ground truth it is compared with.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Convention:
    name: str
    labels: frozenset[int] | None  # allowed label values; None = any non-negative integer (instance ids)
    regions: dict[str, frozenset[int]]  # region name -> label values it contains
    paint: tuple[tuple[str, int], ...]  # decode order: later regions overwrite earlier ones

    def check(self, values: np.ndarray, where: str) -> None:
        """Raise ValueError naming `where` if a label value does not belong to this convention."""
        values = np.unique(values)
        if self.labels is None:
            bad = values[(values < 0) | (values != np.round(values))]
        else:
            bad = np.setdiff1d(values, sorted(self.labels))
        if bad.size:
            allowed = "non-negative integers" if self.labels is None else sorted(self.labels)
            raise ValueError(
                f"{where}: label values {bad.tolist()[:8]} do not belong to the {self.name} convention ({allowed})"
            )

    def to_regions(self, label: np.ndarray) -> np.ndarray:
        """(1, X, Y, Z) label map -> (R, X, Y, Z) float region masks."""
        return np.concatenate([np.isin(label, sorted(v)) for v in self.regions.values()]).astype(np.float32)

    def from_regions(self, masks: np.ndarray) -> np.ndarray:
        """(R, X, Y, Z) binary region masks -> (X, Y, Z) uint8 label map in this convention."""
        names = list(self.regions)
        out = np.zeros(masks.shape[1:], dtype=np.uint8)
        for region, value in self.paint:
            out[masks[names.index(region)] > 0] = value
        return out


def _brats(name: str, wt: set[int], tc: set[int], et: set[int], edema: int, core: int, enh: int) -> Convention:
    return Convention(
        name,
        frozenset({0} | wt),
        {"wt": frozenset(wt), "tc": frozenset(tc), "et": frozenset(et)},
        (("wt", edema), ("tc", core), ("et", enh)),
    )


CONVENTIONS: dict[str, Convention] = {
    # BraTS 2018-2021: 1 necrotic core, 2 edema, 4 enhancing tumour
    "brats2021": _brats("brats2021", {1, 2, 4}, {1, 4}, {4}, edema=2, core=1, enh=4),
    # BraTS 2013-2015: 1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing (tumour core without ET is painted 1)
    "brats2013": _brats("brats2013", {1, 2, 3, 4}, {1, 3, 4}, {4}, edema=2, core=1, enh=4),
    # Medical Segmentation Decathlon Task01: 1 edema, 2 non-enhancing, 3 enhancing
    "msd": _brats("msd", {1, 2, 3}, {2, 3}, {3}, edema=1, core=2, enh=3),
    # EM boundaries: 0 = membrane/boundary, positive = cell interior or neuron id (ISBI 2012 uses 255)
    "em_membrane": Convention("em_membrane", None, {"membrane": frozenset({0})}, (("membrane", 1),)),
}


def get_convention(name: str) -> Convention:
    if name not in CONVENTIONS:
        raise ValueError(f"unknown label convention {name!r}; choose one of {sorted(CONVENTIONS)}")
    return CONVENTIONS[name]
