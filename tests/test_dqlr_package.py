"""DQLR end to end through the CLI: synth -> train -> export (tested package) -> check ->
predict, and bad input answered with one message, exit code 2, no traceback, no output.

One tiny run and one package are shared by the module (session-scoped fixtures): a network
with one stride-2 stage and one residual block keeps the lateral halo at 22 px, so the
package's minimal tile is 48 px and bioimageio.core's tests take seconds.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from typer.testing import CliRunner

from sharpstack.cli import app

from ._cli import ok as _ok, clean_failure as _clean_failure
from ._windows import assert_windows_agree

runner = CliRunner()

TRAIN_FLAGS = ["--hidden", "8", "--rnn-hidden", "8", "--res-hidden", "4", "--code-dim", "8",
               "--codes", "16", "--down", "1", "--res-blocks", "1", "--patch-size", "16",
               "--batch-size", "4", "--clips", "32", "--epochs", "2", "--steps-per-epoch", "3",
               "--threads", "1"]





@pytest.fixture(scope="module")
def dq_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("dqlr_data")
    _ok(runner.invoke(app, ["synth", "dqlr", str(out), "--shape", "12,64,64", "--stacks", "1",
                            "--seed", "3"]))
    return out


@pytest.fixture(scope="module")
def dq_run(dq_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("dqlr_run") / "run"
    _ok(runner.invoke(app, ["train", "dqlr", str(dq_data / "stacks"), str(run), *TRAIN_FLAGS]))
    return run


@pytest.fixture(scope="module")
def dq_package(dq_run, dq_data, tmp_path_factory):
    pkg = tmp_path_factory.mktemp("dqlr_pkg") / "dqlr.zip"
    _ok(runner.invoke(app, ["export", str(dq_run), str(dq_data / "test.tif"), str(pkg)]))
    return pkg


def test_the_run_records_method_settings_and_codebook_usage(dq_run):
    info = json.loads((dq_run / "run.json").read_text())
    assert info["method"] == "dqlr" and info["status"] == "trained"
    assert info["settings"]["num_codes"] == 16 and info["settings"]["n_down"] == 1
    usage = info["record"]["codebook"]
    assert 1 <= usage["train_perplexity"] <= 16 and usage["train_codes_used"] >= 1
    hist = json.loads((dq_run / "history.json").read_text())["history"]
    assert all("train_perplexity" in h and "train_restarts" in h for h in hist)


def test_package_passes_bioimageio_test_for_every_weight_format(dq_package):
    from sharpstack.export.package import test_package

    with zipfile.ZipFile(dq_package) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        names = set(z.namelist())
    assert set(rdf["weights"]) == {"torchscript", "onnx", "pytorch_state_dict"}
    assert rdf["weights"]["onnx"]["opset_version"] == 17
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] == "DQLRDeploy"
    ins = {a.get("id", a["type"]): a for a in rdf["inputs"][0]["axes"]}
    outs = {a.get("id", a["type"]): a for a in rdf["outputs"][0]["axes"]}
    assert ins["z"]["size"] == {"min": 5, "step": 1}  # 2 * (window - 1) + 1, any depth
    assert outs["z"]["halo"] == 2 and outs["y"]["halo"] == 22 and outs["x"]["halo"] == 22
    assert ins["y"]["size"]["min"] % ins["y"]["size"]["step"] == 0
    assert isinstance(rdf["documentation"], str) and "README.md" in names
    card = z_read(dq_package, "README.md")
    assert "Codebook usage" in card and "QuPath" in card and "{" not in card.split("kwargs")[0]
    ok, report = test_package(dq_package)
    assert ok, report


def z_read(pkg: Path, name: str) -> str:
    with zipfile.ZipFile(pkg) as z:
        return z.read(name).decode("utf-8")


def test_check_passes_for_the_claimed_consumers(dq_package):
    _ok(runner.invoke(app, ["check", str(dq_package), "--for", "deepimagej", "--for",
                            "ilastik"]))
    from sharpstack.export.consumers import check_package

    rep = check_package(dq_package, ["qupath"])
    assert not rep.compatible["qupath"]
    assert any(f.rule == "qupath.2d-only" for f in rep.consumers["qupath"].errors)


def test_predict_reproduces_the_in_process_restoration(dq_package, dq_run, dq_data, tmp_path):
    from sharpstack.io import read_stack
    from sharpstack.methods.dqlr import restore
    from sharpstack.workflows import load_run

    out = tmp_path / "restored.tif"
    _ok(runner.invoke(app, ["predict", str(dq_package), str(dq_data / "test.tif"), str(out)]))
    got = read_stack(out)
    stack = read_stack(dq_data / "test.tif")
    want = restore(load_run(dq_run).model, np.asarray(stack.values))
    assert got.shape == stack.shape
    np.testing.assert_allclose(np.asarray(got.values), want, atol=1e-4)
    assert got.attrs["voxel_size"] == pytest.approx(stack.attrs["voxel_size"])


def test_tiled_prediction_equals_untiled(dq_package, dq_data):
    from sharpstack.io import read_stack
    from sharpstack.predict import predict_array

    stack = read_stack(dq_data / "test.tif")
    whole = predict_array(dq_package, stack, tile={"z": 64, "y": 256, "x": 256})
    tiled = predict_array(dq_package, stack, tile={"z": 6, "y": 48, "x": 48})
    for w in ("onnx", "pytorch_state_dict"):
        other = predict_array(dq_package, stack, tile={"z": 7, "y": 56, "x": 48},
                              weight_format=w)
        np.testing.assert_allclose(np.asarray(other), np.asarray(whole), atol=1e-4)
    np.testing.assert_allclose(np.asarray(tiled), np.asarray(whole), atol=1e-4)


def test_predict_takes_any_depth_and_lateral_size(dq_package, dq_data):
    from sharpstack.io import as_dataarray, read_stack
    from sharpstack.predict import predict_array

    stack = np.asarray(read_stack(dq_data / "test.tif").values)
    for crop in (stack[:3, :50, :44], stack[:, 5:62, 3:64], stack[2:11]):
        out = predict_array(dq_package, as_dataarray(crop, "ZYX"))
        assert out.shape == crop.shape and np.isfinite(np.asarray(out)).all()


# ---------------------------------------------------------------------------- bad input

def test_train_on_a_2d_image_is_refused(tmp_path):
    img = tmp_path / "plane.tif"
    tifffile.imwrite(img, np.random.default_rng(0).random((64, 64)).astype(np.float32))
    run = tmp_path / "run"
    _clean_failure(runner.invoke(app, ["train", "dqlr", str(img), str(run), *TRAIN_FLAGS]),
                   "2D image", "z-stack")
    assert not run.exists()


def test_train_on_too_few_slices_is_refused(tmp_path):
    img = tmp_path / "thin.tif"
    # window 3 and, by default with shallow-to-deep pairs, no predicted slices: 3 needed
    tifffile.imwrite(img, np.random.default_rng(0).random((2, 48, 48)).astype(np.float32),
                     imagej=True, metadata={"axes": "ZYX"})
    run = tmp_path / "run"
    _clean_failure(runner.invoke(app, ["train", "dqlr", str(img), str(run), *TRAIN_FLAGS]),
                   "2 slice", "at least 3 consecutive slices", "--window")
    assert not run.exists()


def test_train_on_nan_is_refused(tmp_path):
    a = np.random.default_rng(0).random((8, 48, 48)).astype(np.float32)
    a[2, 3, 4] = np.nan
    img = tmp_path / "nan.tif"
    tifffile.imwrite(img, a, imagej=True, metadata={"axes": "ZYX"})
    run = tmp_path / "run"
    _clean_failure(runner.invoke(app, ["train", "dqlr", str(img), str(run), *TRAIN_FLAGS]),
                   "NaN")
    assert not run.exists()


def test_bad_settings_name_the_option(tmp_path, dq_data):
    run = tmp_path / "run"
    _clean_failure(runner.invoke(app, ["train", "dqlr", str(dq_data / "stacks"), str(run),
                                       *TRAIN_FLAGS, "--codes", "1"]), "--codes")
    assert not run.exists()


def test_export_with_a_2d_sample_writes_nothing(dq_run, tmp_path):
    img = tmp_path / "plane.tif"
    tifffile.imwrite(img, np.random.default_rng(0).random((64, 64)).astype(np.float32))
    pkg = tmp_path / "p.zip"
    _clean_failure(runner.invoke(app, ["export", str(dq_run), str(img), str(pkg)]), "ZYX")
    assert not pkg.exists() and not list(tmp_path.glob("*.zip*"))


def test_predict_on_a_2d_image_writes_nothing(dq_package, tmp_path):
    img = tmp_path / "plane.tif"
    tifffile.imwrite(img, np.random.default_rng(0).random((64, 64)).astype(np.float32),
                     imagej=True)
    out = tmp_path / "out.tif"
    _clean_failure(runner.invoke(app, ["predict", str(dq_package), str(img), str(out)]), "3D")
    assert not out.exists()


def test_default_windows_match_one_window_and_the_sample_output(dq_package):
    """Default windows on a stack larger than one window along every tiled axis (lengths
    not multiples of the step) == one window; the sample input reproduces the sample output."""
    shapes = assert_windows_agree(dq_package)
    assert min(shapes["large"][-2:]) > 256


def test_a_run_recorded_before_the_bilinear_generator_loads_as_it_was_trained(dq_run,
                                                                              tmp_path):
    """A run folder whose settings predate ``upsample`` (and ``pairs``) was trained with the
    nearest-neighbour generator: reading it back must rebuild that network, not today's
    default (the same weights through another upsampling give another output, silently)."""
    import json
    import shutil

    from sharpstack.workflows import load_run

    old = tmp_path / "old_run"
    shutil.copytree(dq_run, old)
    info = json.loads((old / "run.json").read_text())
    assert info["settings"]["upsample"] == "bilinear"  # today's runs record it
    for key in ("upsample", "pairs"):
        info["settings"].pop(key)
    (old / "run.json").write_text(json.dumps(info))
    settings = load_run(old).trained.settings
    assert settings.upsample == "nearest" and settings.pairs == "self"
    assert load_run(dq_run).trained.settings.upsample == "bilinear"
