"""Training stops with one error line, before any step, on a label off its image's grid."""

from medseg.cli import main
from tests.conftest import REPO, TINY, write_case
from tests.unit.test_checks import FLIPPED, relabel


def test_train_with_a_flipped_label_is_a_one_line_error_before_training(tmp_path, capsys):
    root, run = tmp_path / "root", tmp_path / "run"
    for i in range(3):
        write_case(root, f"case{i}", seed=i)
    bad = relabel(root / "case2", affine=FLIPPED)
    rc = main(["train", "--config", str(REPO / "configs/brats.yaml"), f"--data.root={root}", *TINY,
               "--data.cache=none", f"--trainer.default_root_dir={run}", "--trainer.max_steps=2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"error: {bad}: label direction" in err
    assert not list(run.rglob("*.ckpt"))
