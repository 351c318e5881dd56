"""A microscopist's first hour: long jobs say what they are doing (export and validate print
their stages, training its steps with the loss), and the demo ends with the next step (the
files to open, the package for each program and how to run it, in its last lines and in
summary.json)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sharpstack.cli import app

from ._cli import ok
from .conftest import TINY

runner = CliRunner()


def test_validate_shows_each_weight_formats_test(package_upsample):
    res = ok(runner.invoke(app, ["validate", str(package_upsample)]))
    for wf in ("pytorch_state_dict", "torchscript", "onnx"):
        assert f"validate [" in res.output and f"testing the {wf} weights" in res.output, \
            res.output
    # the stages come before the verdict
    assert res.output.index("testing the") < res.output.index("passed:")


def test_training_bar_moves_within_an_epoch_and_shows_the_loss(synth_data, tmp_path, capfd,
                                                               monkeypatch):
    from sharpstack.workflows import train_run

    import tqdm.auto

    class EveryRefresh(tqdm.auto.tqdm):  # every refresh shown, however fast the steps
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "mininterval": 0, "miniters": 1})

    monkeypatch.setattr(tqdm.auto, "tqdm", EveryRefresh)

    train_run("isonet", [synth_data["paths"]["anisotropic"]], tmp_path / "run",
              settings={"psf": {"kind": "gaussian", "sigma_xy": 2.0, "sigma_z": 8.0},
                        **{**TINY, "epochs": 1, "steps_per_epoch": 3}}, progress=True)
    err = capfd.readouterr().err
    assert "training epoch 1/1" in err, err
    # one tick per step, not one per epoch, each with the running loss
    frames = err.split("\r")
    for step in (1, 2):
        assert any(f" {step}/3 [" in f and "loss=" in f for f in frames), err
    assert "val=" in frames[-1], err  # the epoch's training and validation loss at its end


@pytest.fixture
def tiny_demo(monkeypatch):
    from dataclasses import replace

    from sharpstack.methods import get_method

    m = get_method("isonet")
    demo = replace(m.demo, synth={"kind": "nuclei", "shape": (64, 64, 64), "factor": 8,
                                  "psf": {"kind": "gaussian", "sigma_xy": 2.0,
                                          "sigma_z": 8.0}, "seed": 3},
                   settings={**TINY, "arch": "unet"})
    monkeypatch.setattr(type(m), "demo", demo)
    return m


def test_demo_ends_with_the_next_step(tiny_demo, tmp_path):
    from sharpstack.io import read_stack

    out = tmp_path / "demo"
    res = ok(runner.invoke(app, ["demo", "isonet", "--out", str(out), "--epochs", "1",
                                 "--steps", "2"]))
    summary = json.loads((out / "summary.json").read_text())
    nxt = summary["next_steps"]
    # export showed its stages inside the demo
    for stage in ("tracing the network", "exporting ONNX", "checking the package for "
                  "deepimagej", "testing the onnx weights"):
        assert stage in res.output, (stage, res.output)
    # the last lines name the restored stack, the figure, the package per program, Fiji's step
    tail = res.output.strip().splitlines()[-len(nxt["text"]):]
    assert tail == nxt["text"]
    last = "\n".join(tail)
    assert summary["restored"] in last and summary["figure"] in last
    fiji = next(p for p in nxt["programs"] if p["program"] == "Fiji/deepImageJ")
    assert fiji["package"].endswith("isonet_isotropic.zip") and fiji["package"] in last
    assert "DeepImageJ Run" in fiji["how"] and fiji["input"] in fiji["how"]
    assert {p["program"] for p in nxt["programs"]} == {"Fiji/deepImageJ", "ilastik"}
    # the isotropic package's input exists: the sample resampled to isotropic voxels
    iso = read_stack(fiji["input"])
    raw = read_stack(summary["packages"]["isotropic"]["path"].replace(
        "isonet_isotropic.zip", "data/anisotropic.tif"))
    assert iso.shape == (raw.shape[0] * 8, *raw.shape[1:])
    vr, vi = raw.attrs["voxel_size"], iso.attrs["voxel_size"]
    assert vi["z"] == pytest.approx(vr["z"] / 8) and vi["y"] == pytest.approx(vr["y"])
    # the package's own test input is a crop of exactly that stack
    import zipfile

    with zipfile.ZipFile(fiji["package"]) as z, z.open("test_input.npy") as fh:
        test_input = np.load(fh)[0, 0]
    d, h, w = test_input.shape
    z0, y0, x0 = [(a - b) // 2 for a, b in zip(iso.shape, test_input.shape)]
    np.testing.assert_allclose(iso.values[z0:z0 + d, y0:y0 + h, x0:x0 + w], test_input,
                               rtol=1e-6, atol=1e-6)
    # the upsample package (raw stack in) is what sharpstack predict ran, on the sample
    assert summary["packages"]["upsample"]["input"].endswith("anisotropic.tif")
