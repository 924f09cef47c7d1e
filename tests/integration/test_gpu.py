"""GPU smoke tests (skipped without CUDA): mixed-precision training, CUDA prediction, and the CPU-stitching fallback."""

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.cli import main
from medseg.inference.predictor import infer
from medseg.nets import build_net
from medseg.runtime import pick_device
from tests.conftest import train_tiny

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_training(brats_root, tmp_path, precision):
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    ckpts = train_tiny(brats_root, tmp_path, "--trainer.accelerator=gpu", "--trainer.devices=1",
                       f"--trainer.precision={precision}", "--trainer.max_steps=3")
    assert (ckpts / "best.ckpt").is_file()


def test_predict_auto_runs_on_cuda_and_agrees_with_cpu(brats_root, tiny_ckpt, tmp_path):
    assert pick_device("auto").type == "cuda"
    case = brats_root / "case0"
    on_gpu, on_cpu = tmp_path / "gpu.nii.gz", tmp_path / "cpu.nii.gz"
    assert main(["predict", str(case), "--model", str(tiny_ckpt), "--output", str(on_gpu), "--device", "auto"]) == 0
    assert main(["predict", str(case), "--model", str(tiny_ckpt), "--output", str(on_cpu), "--device", "cpu"]) == 0
    gpu, cpu = (np.asarray(nib.load(p).dataobj) for p in (on_gpu, on_cpu))
    assert (gpu == cpu).mean() > 0.99  # autocast may flip voxels whose probability is within rounding of 0.5


def test_volume_too_large_for_the_gpu_is_stitched_on_the_cpu(capsys):
    net = build_net("unet", 1, 3, channels=[4, 8], strides=[1, 2], kernel_sizes=[3, 3], block="conv",
                    block_kwargs={}).eval()
    image = torch.rand(1, 1, 256, 256, 256)  # 64 MiB in; the whole-volume path needs > 300 MiB of GPU memory
    cuda = torch.device("cuda")
    whole = infer(net, image, [64, 64, 64], 0.25, cuda)
    assert "stitching" not in capsys.readouterr().err
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(200 * 2**20 / torch.cuda.get_device_properties(0).total_memory)
    try:
        stitched = infer(net, image, [64, 64, 64], 0.25, cuda)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert "stitching the windows on the CPU" in capsys.readouterr().err
    assert stitched.device.type == "cpu" and stitched.dtype == torch.float32
    torch.testing.assert_close(stitched, whole, atol=1e-3, rtol=1e-3)
