import os

import pytest
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset

from medseg.data.cache import preprocessing_key
from medseg.data.datamodule import SegDataModule
from tests.conftest import write_case

KEY = {"modalities": ["flair", "t1ce"], "label_convention": "brats2021", "spacing": [2.0, 2.0, 2.0],
       "crop_foreground": True, "normalize": "nonzero", "voxel_size": None}


@pytest.mark.parametrize("field, other", [("modalities", ["t1ce", "flair"]), ("label_convention", "brats2013"),
                                          ("spacing", [1.0, 1.0, 1.0]), ("crop_foreground", False),
                                          ("normalize", "all"), ("voxel_size", [50.0, 4.0, 4.0])])
def test_key_changes_with_everything_that_changes_preprocessing(field, other):
    assert preprocessing_key(**KEY) == preprocessing_key(**{**KEY, "spacing": (2, 2, 2)})  # same values, same key
    assert preprocessing_key(**KEY) != preprocessing_key(**{**KEY, field: other})


def datamodule(root, cache, cache_dir=None, spacing=(2.0, 2.0, 2.0)) -> SegDataModule:
    dm = SegDataModule(root=str(root), modalities=["flair", "t1ce"], spacing=spacing, patch_size=[8, 8, 8],
                       cache=cache, cache_dir=str(cache_dir) if cache_dir else None)
    dm.setup("fit")
    return dm


@pytest.fixture
def root(tmp_path):
    for i in range(3):
        write_case(tmp_path / "root", f"case{i}", seed=i)
    return tmp_path / "root"


def test_disk_cache_holds_the_same_tensors_as_ram_and_is_read_back(root, tmp_path):
    ram, disk = datamodule(root, "ram"), datamodule(root, "disk", tmp_path / "cache")
    assert isinstance(ram.val_ds, CacheDataset) and isinstance(disk.val_ds, PersistentDataset)
    folder = disk.disk_cache_dir()
    assert folder.parent == tmp_path / "cache" and not list(folder.glob("*.pt"))
    first = disk.val_ds[0]  # computed and written
    assert len(list(folder.glob("*.pt"))) == 1
    again = datamodule(root, "disk", tmp_path / "cache").val_ds[0]  # a new run reads the file
    for key in ("image", "label"):
        torch.testing.assert_close(torch.as_tensor(again[key]), torch.as_tensor(ram.val_ds[0][key]))
        torch.testing.assert_close(torch.as_tensor(first[key]), torch.as_tensor(ram.val_ds[0][key]))
    assert isinstance(datamodule(root, "none").val_ds, Dataset)


def test_cached_files_hold_only_the_cropped_voxels(root, tmp_path):
    """A cropped tensor is a view of the uncropped volume, and torch.save writes a view's whole storage."""
    dm = datamodule(root, "disk", tmp_path / "cache", spacing=None)
    case = dm.val_ds[0]
    assert case["image"].shape[1:] != (32, 36, 28)  # cropped to the brain
    saved = torch.load(next(dm.disk_cache_dir().glob("*.pt")), weights_only=True)
    for key in ("image", "label"):
        assert saved[key].untyped_storage().nbytes() == saved[key].numel() * saved[key].element_size()


def test_a_replaced_input_file_is_preprocessed_again(root, tmp_path):
    disk = datamodule(root, "disk", tmp_path / "cache")
    disk.val_ds[0]
    label = disk.val_ds.data[0]["label"]
    stat = os.stat(label)
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as if the file had been rewritten
    datamodule(root, "disk", tmp_path / "cache").val_ds[0]
    assert len(list(disk.disk_cache_dir().glob("*.pt"))) == 2
