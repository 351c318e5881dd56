"""The CLI: help texts, and user mistakes answered with a message, exit code != 0, no
traceback, and no file written or overwritten."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from sharpstack.cli import app

runner = CliRunner()
COMMANDS = ["synth", "train", "export", "validate", "predict", "demo", "check"]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help(cmd):
    res = runner.invoke(app, [cmd, "--help"])
    assert res.exit_code == 0
    assert "Usage" in res.output


def test_installed_entry_point_runs():
    exe = shutil.which("sharpstack") or str(Path(sys.executable).parent / "sharpstack")
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "predict" in res.stdout


def _assert_clean_failure(res, *needles):
    assert res.exit_code != 0
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    for n in needles:
        assert n in res.output, res.output


def test_corrupt_tiff_is_refused(package_upsample, tmp_path):
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    out = tmp_path / "out.tif"
    res = runner.invoke(app, ["predict", str(package_upsample), str(bad), str(out)])
    _assert_clean_failure(res, "corrupt.tif")
    assert not out.exists()


def test_2d_image_to_3d_model_is_refused(package_upsample, tmp_path):
    img = tmp_path / "plane.tif"
    tifffile.imwrite(img, np.random.default_rng(0).random((64, 64)).astype(np.float32),
                     imagej=True)
    out = tmp_path / "out.tif"
    res = runner.invoke(app, ["predict", str(package_upsample), str(img), str(out)])
    _assert_clean_failure(res, "3D")
    assert not out.exists()


def test_nan_stack_is_refused(package_upsample, tmp_path):
    a = np.random.default_rng(0).random((8, 64, 64)).astype(np.float32)
    a[3, 10, 10] = np.nan
    img = tmp_path / "nan.tif"
    tifffile.imwrite(img, a, imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "out.tif"
    res = runner.invoke(app, ["predict", str(package_upsample), str(img), str(out)])
    _assert_clean_failure(res, "NaN")
    assert not out.exists()


def test_existing_output_is_not_overwritten(package_upsample, synth_data, tmp_path):
    out = tmp_path / "exists.tif"
    out.write_bytes(b"precious")
    res = runner.invoke(app, ["predict", str(package_upsample),
                              str(synth_data["paths"]["anisotropic"]), str(out)])
    _assert_clean_failure(res, "exists")
    assert out.read_bytes() == b"precious"


def test_missing_input_file(package_upsample, tmp_path):
    res = runner.invoke(app, ["predict", str(package_upsample), str(tmp_path / "nope.tif"),
                              str(tmp_path / "o.tif")])
    _assert_clean_failure(res, "nope.tif")


def test_synth_refuses_to_overwrite(tmp_path):
    res = runner.invoke(app, ["synth", "isonet", str(tmp_path), "--shape", "32,32,32", "--factor", "4"])
    assert res.exit_code == 0, res.output
    before = (tmp_path / "anisotropic.tif").read_bytes()
    res = runner.invoke(app, ["synth", "isonet", str(tmp_path), "--shape", "32,32,32", "--factor", "4",
                              "--seed", "5"])
    _assert_clean_failure(res, "already exist", "--overwrite")
    assert (tmp_path / "anisotropic.tif").read_bytes() == before


def test_train_export_predict_through_the_cli(synth_data, tmp_path):
    """The documented workflow end to end, each step through the CLI."""
    stack = str(synth_data["paths"]["anisotropic"])
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "isonet", stack, str(run), "--epochs", "1", "--steps-per-epoch",
                              "2", "--patches", "32", "--patch-size", "32", "--batch-size", "4",
                              "--dropout", "0"])
    assert res.exit_code == 0, res.output
    assert (run / "model.pt").exists() and (run / "loss_curve.png").exists()
    # the factor came from the file's calibration (z spacing 1.6 um / pixel 0.2 um)
    from sharpstack.workflows import load_run

    assert load_run(run).model.config.factor == 8
    assert load_run(run).model.config.dropout == 0.0
    res = runner.invoke(app, ["train", "isonet", stack, str(run), "--epochs", "2", "--steps-per-epoch",
                              "2", "--patches", "32", "--patch-size", "32", "--batch-size", "4",
                              "--dropout", "0", "--resume"])
    assert res.exit_code == 0, res.output
    assert len(load_run(run).model.result.history) == 2


def test_check_command_reports_qupath_honestly(package_isotropic):
    res = runner.invoke(app, ["check", str(package_isotropic), "--for", "qupath"])
    assert res.exit_code == 1
    assert "qupath" in res.output.lower() and "2d" in res.output.lower()
    res = runner.invoke(app, ["check", str(package_isotropic), "--for", "deepimagej",
                              "--for", "ilastik", "--for", "bioimageio"])
    assert res.exit_code == 0, res.output


def test_check_unknown_consumer_suggests(package_isotropic):
    res = runner.invoke(app, ["check", str(package_isotropic), "--for", "deepimage"])
    _assert_clean_failure(res, "deepimagej")
