"""Label conventions: which label values a dataset uses, the regions trained on, and the way back to labels.

Training is multi-label (one sigmoid channel per region, nested for BraTS); a convention decodes region masks
back into the dataset's own label values so a predicted mask reads like the ground truth it is compared with.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np

from medseg.errors import MedsegError
from medseg.registry import look_up


@dataclass(frozen=True)
class Convention:
    name: str
    labels: frozenset[int] | None  # allowed label values; None = any non-negative integer (instance ids)
    regions: dict[str, frozenset[int]]  # region name -> label values it contains
    paint: tuple[tuple[str, int], ...]  # decode order: later regions overwrite earlier ones
    fill: int = 0  # label value where no region is predicted (EM: 255 = cell interior, as ISBI 2012's labels)
    required: int | None = None  # a value every label volume must hold, or its target region is empty (EM: 0)
    targets: Literal["regions", "boundary", "affinity"] = "regions"  # EM instances: maps made from neuron ids

    @property
    def instances(self) -> bool:
        """Labels are neuron ids: trained on boundary/affinity maps (medseg.em.targets), decoded to ids."""
        return self.targets != "regions"

    def check(self, values: np.ndarray, where: str, training: bool = True) -> None:
        """Raise MedsegError naming `where` if a label value does not belong to this convention, or, for training,
        if the value the target is made of is missing (an EM id volume without boundary voxels would train on
        nothing; a prediction or an evaluated volume may lack it)."""
        values = np.unique(values)
        if training and self.required is not None and self.required not in values:
            raise MedsegError(f"{where}: no voxel has label {self.required}, which the {self.name} convention trains "
                             f"on ({', '.join(self.regions)}); the target would be empty")
        if self.labels is None:
            bad = values[(values < 0) | (values != np.round(values))]
        else:
            bad = np.setdiff1d(values, sorted(self.labels))
        if bad.size:
            allowed = "non-negative integers" if self.labels is None else sorted(self.labels)
            raise MedsegError(
                f"{where}: label values {bad.tolist()[:8]} do not belong to the {self.name} convention ({allowed})"
            )

    def to_regions(self, label: np.ndarray) -> np.ndarray:
        """(1, X, Y, Z) label map -> (R, X, Y, Z) float region masks."""
        return np.concatenate([np.isin(label, sorted(v)) for v in self.regions.values()]).astype(np.float32)

    def from_regions(self, masks: np.ndarray) -> np.ndarray:
        """(R, X, Y, Z) binary region masks -> (X, Y, Z) uint8 label map in this convention."""
        names = list(self.regions)
        out = np.full(masks.shape[1:], self.fill, dtype=np.uint8)
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
    # BraTS 2023+: 1 non-enhancing tumour core (NETC), 2 surrounding FLAIR hyperintensity (SNFH/edema), 3 enhancing
    "brats2023": _brats("brats2023", {1, 2, 3}, {1, 3}, {3}, edema=2, core=1, enh=3),
    # Medical Segmentation Decathlon Task01: 1 edema, 2 non-enhancing, 3 enhancing
    "msd": _brats("msd", {1, 2, 3}, {2, 3}, {3}, edema=1, core=2, enh=3),
    # EM boundaries: 0 = membrane/boundary, positive = cell interior or neuron id; masks are written 0 = membrane,
    # 255 = interior, as ISBI 2012's labels
    "em_membrane": Convention("em_membrane", None, {"membrane": frozenset({0})}, (("membrane", 0),), fill=255,
                              required=0),
    # EM neurons: label volumes hold one id per neuron (0 = boundary or unlabelled); trained on a boundary map or
    # on 3 nearest-neighbour affinities; predicted as uint32 neuron ids (medseg.em.decode)
    "em_boundary": Convention("em_boundary", None, {"boundary": frozenset()}, (), targets="boundary"),
    "em_affinity": Convention("em_affinity", None, {f"affinity_{a}": frozenset() for a in "xyz"}, (),
                              targets="affinity"),
}
ConventionName = Literal[tuple(CONVENTIONS)]


# The BraTS layout training and check-data assume unless told otherwise: its convention and its four channels.
DEFAULT_CONVENTION = "brats2021"
BRATS_MODALITIES = ["t1", "t1ce", "t2", "flair"]


def get_convention(name: str) -> Convention:
    return look_up(name, CONVENTIONS, "label convention")


ET_IS_4 = frozenset({"brats2013", "brats2021"})  # BraTS 2023 moved enhancing tumour from 4 to 3


def looks_like_brats2023(convention: Convention, values: set[int]) -> bool:
    """A BraTS 2013/2021 training set whose labels hold 3 but never 4 is almost surely BraTS 2023 data, and would
    train on an empty ET target (brats2013 even accepts the 3s)."""
    return convention.name in ET_IS_4 and 3 in values and 4 not in values
