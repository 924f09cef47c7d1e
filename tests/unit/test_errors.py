"""One error contract: bad input is a MedsegError (a ValueError) that the CLI prints as one `error: …` line, exit 2,
no traceback; unknown names come from the one registry look-up, with the valid names or a suggestion."""

import subprocess
import sys

import pytest

from medseg.cli import main
from medseg.errors import MedsegError
from medseg.labels import CONVENTIONS, get_convention
from tests.conftest import REPO


def test_medseg_error_is_a_value_error():
    assert issubclass(MedsegError, ValueError)
    with pytest.raises(MedsegError, match=r"unknown label convention 'brats_2021'; did you mean 'brats2021'\?"):
        get_convention("brats_2021")


def test_check_data_with_an_unknown_convention_is_one_error_line(brats_root, capsys):
    assert main(["check-data", "--root", str(brats_root), "--label-convention", "bratz"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: unknown label convention 'bratz'")
    assert captured.err.count("\n") == 1
    assert all(name in captured.err for name in CONVENTIONS)


def test_the_command_prints_no_traceback(brats_root):
    """The same through a real process: what a user sees in the terminal."""
    run = subprocess.run([sys.executable, "-m", "medseg.cli", "check-data", "--root", str(brats_root),
                          "--label-convention", "bratz"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [run.stderr.strip()] and run.stderr.startswith("error: ")
    assert "Traceback" not in run.stderr + run.stdout


def test_evaluate_with_an_unknown_convention_suggests_the_closest(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), str(tmp_path), "--label-convention", "brats2019"]) == 2
    assert "did you mean 'brats2021'?" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["predict", "x.nii.gz", "--model", "brats.ckpt"], "no such"),
    (["bench", "--archs", "unet3d"], "unknown architecture 'unet3d'; did you mean 'unet'?"),
], ids=["checkpoint", "arch"])
def test_other_unknown_names_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
