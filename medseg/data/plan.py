"""The Plan: everything that turns files into network input and network output back into a mask.

Built once by training (from the data and model sections of the recipe), stored in every checkpoint as plain JSON
values, and read back by prediction, so training and prediction cannot drift apart (nnU-Net's plans.json, small).
Preprocessing is built from a Plan and nothing else.
"""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace

from monai import transforms as T

import medseg
from medseg.data.cache import preprocessing_key
from medseg.data.transforms import LabelToRegionsd, LoadCased, Normalization, preprocess
from medseg.errors import MedsegError
from medseg.labels import Convention, get_convention

# 1: the first checkpoints (the same keys without `format` checks); 2: written and checked through Plan;
# 3: PmSCn's default became inner_act 'wide' (linear, fused streams in narrow layers); older plans read with the
# inner norm + act in every stream that they were trained with
FORMAT = 3
READABLE_FORMATS = (1, 2, 3)
NET_KEYS = ("channels", "strides", "kernel_sizes", "block", "block_kwargs")
# added after format 2 checkpoints were written: their default when absent
OPTIONAL = ("keep_largest", "fingerprint", "decode", "lesion_flair_z")


@dataclass(frozen=True)
class Plan:
    """Args:
        modalities: input channel names in network order (matched to files by name at prediction).
        label_convention: name in medseg.labels.CONVENTIONS; fixes the output regions and label values.
        spacing: target voxel spacing (mm, RAS order) or None for the native grid.
        voxel_size: (z, y, x) nm of EM stacks, which carry no geometry.
        crop_foreground / normalize: crop to the non-zero box; z-score over non-zero voxels (`nonzero_clip`: after
            clipping them to their 0.5/99.5 percentiles; `nonzero_robust`: median and IQR instead) or all voxels.
        patch_size: training patch and sliding-window size, in voxels after resampling.
        arch / net: the network (medseg.nets.build_net arguments); empty while only the data side is known.
        keep_largest: postprocessing of the label map: keep only the largest connected component of the foreground
            (nnU-Net's "remove all but the largest component"), decided after training from held-out cases and
            stored with the model, as nnU-Net does; `medseg predict --keep-largest/--no-keep-largest` overrides it.
        lesion_flair_z: postprocessing, before keep_largest: drop every lesion whose FLAIR 75th percentile is below
            this many brain SDs above the brain mean (medseg.inference.postprocess); None: off. `medseg predict
            --lesion-flair-z Z|off` overrides it.
        fingerprint: intensity and size statistics of the training cases after preprocessing
            (medseg.inference.qc.training_fingerprint), which quality control compares each prediction with.
        decode: EM neuron models: the decoding (medseg.em.decode.DecodeParams fields) chosen on the validation
            volumes at the end of training (medseg.training.decoding); None: DecodeParams' defaults. Flags override it.
    """

    modalities: tuple[str, ...]
    label_convention: str
    spacing: tuple[float, ...] | None
    voxel_size: tuple[float, ...] | None
    crop_foreground: bool
    normalize: Normalization
    patch_size: tuple[int, ...]
    arch: str = "unet"
    net: Mapping = field(default_factory=dict)
    keep_largest: bool = False
    fingerprint: Mapping | None = None
    decode: Mapping | None = None
    lesion_flair_z: float | None = None
    format: int = FORMAT

    @classmethod
    def from_data(cls, data: Mapping) -> "Plan":
        """The data side, from the datamodule's arguments."""
        return cls(tuple(data["modalities"]), data["label_convention"], _tuple(data["spacing"]),
                   _tuple(data["voxel_size"]), bool(data["crop_foreground"]), data["normalize"],
                   tuple(data["patch_size"]))

    def with_net(self, arch: str, net: Mapping) -> "Plan":
        return replace(self, arch=arch, net={k: net[k] for k in NET_KEYS})

    @property
    def convention(self) -> Convention:
        return get_convention(self.label_convention)

    @property
    def regions(self) -> list[str]:
        return list(self.convention.regions)

    def loader(self, with_label: bool = False) -> LoadCased:
        return LoadCased(len(self.modalities), self.convention if with_label else None, self.voxel_size)

    def preprocessing(self, with_label: bool = False) -> list:
        """The deterministic chain after loading: orientation, spacing, crop, normalisation (invertible)."""
        keys = ["image", "label"] if with_label else ["image"]
        return preprocess(keys, self.spacing, self.crop_foreground, self.normalize.startswith("nonzero"),
                          self.normalize == "nonzero_clip", self.normalize == "nonzero_robust")

    def case_transform(self, with_label: bool = False) -> T.Compose:
        """Files -> normalised (C, X, Y, Z) image (and (R, X, Y, Z) region masks, or (1, X, Y, Z) neuron ids):
        training and validation."""
        to_regions = with_label and not self.convention.instances  # neuron ids stay ids until after augmentation
        steps = [self.loader(with_label)] + ([LabelToRegionsd(self.convention)] if to_regions else [])
        return T.Compose(steps + self.preprocessing(with_label))

    def key(self) -> str:
        """A short hash of what changes preprocessed data: the disk cache's folder name."""
        return preprocessing_key(self.modalities, self.label_convention, self.spacing, self.crop_foreground,
                                 self.normalize, self.voxel_size)

    def to_dict(self) -> dict:
        """Plain JSON values (checkpoints are read with weights_only=True)."""
        d = asdict(self)
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
        return {**d, "net": dict(self.net), "decode": dict(self.decode) if self.decode is not None else None,
                "regions": self.regions, "medseg_version": medseg.__version__}

    @classmethod
    def from_dict(cls, d: Mapping, where: str) -> "Plan":
        """Read a stored plan; a newer or unknown format is a clear error rather than a silent misreading."""
        version = d.get("format")
        if version not in READABLE_FORMATS:
            newer = isinstance(version, int) and version > FORMAT
            hint = "upgrade medseg" if newer else "retrain it with this medseg"
            raise MedsegError(f"{where}: checkpoint format {version!r} is not one this medseg "
                              f"{medseg.__version__} reads ({', '.join(map(str, READABLE_FORMATS))}); {hint}")
        try:
            stored = {f.name: d[f.name] for f in fields(cls)
                      if f.name != "format" and (f.name not in OPTIONAL or f.name in d)}
            plan = cls(**{**stored, "net": upgrade_net(stored["net"], version)}, format=FORMAT)
            plan = replace(plan, modalities=tuple(plan.modalities), patch_size=tuple(plan.patch_size),
                           spacing=_tuple(plan.spacing), voxel_size=_tuple(plan.voxel_size))
            plan.convention  # noqa: B018 (an unknown convention fails here, with the file name below)
        except (KeyError, TypeError, ValueError) as e:
            raise MedsegError(f"{where}: checkpoint plan is incomplete or invalid ({e})") from None
        if d.get("regions") not in (None, plan.regions):
            raise MedsegError(f"{where}: checkpoint regions {d['regions']} differ from {plan.label_convention}'s")
        return plan


def upgrade_net(net: Mapping, version: int) -> Mapping:
    """A stored network's arguments with the defaults it was trained under made explicit."""
    if version < 3 and net.get("block") == "pmscn":
        return {**net, "block_kwargs": {"inner_act": True, **(net.get("block_kwargs") or {})}}
    return net


def _tuple(v: Sequence | None) -> tuple | None:
    return tuple(v) if v is not None else None
