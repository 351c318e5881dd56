"""DQLR says when a trained model does not beat its input on its own training stack
(methods/dqlr/selfcheck.py): deep/shallow ratios of band power above noise and of foreground
contrast, input against restoration, the latent-grid texture, and whether the stack degrades
with depth at all. Tiny synthetic data, seeded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from sharpstack import phantoms
from sharpstack.cli import app
from sharpstack.methods.dqlr.depth import depth_blur, depth_profile
from sharpstack.methods.dqlr.selfcheck import compare, gain_text, gain_warning

from ._cli import walk

runner = CliRunner()
Z, N = 24, 64


@pytest.fixture(scope="module")
def scene():
    """A nuclei phantom imaged sharp (shallow quality everywhere) and with lateral blur
    growing from 0.7 to 1.8 px with depth, attenuation to 0.5 and a little noise; both
    normalised to about [0, 1]."""
    rng = np.random.default_rng(0)
    gt = phantoms.nuclei((Z, N, N), seed=1, density=24 / N**3).astype(np.float32)
    sharp = gaussian_filter(gt, (0.0, 0.7, 0.7))
    att = depth_profile(Z, 1.0, 0.5)[:, None, None].astype(np.float32)
    deep = depth_blur(gt, depth_profile(Z, 0.7, 1.8)) * att
    deep = deep + rng.normal(0.0, 0.01, deep.shape).astype(np.float32)
    scale = float(np.percentile(sharp, 99.8))
    return sharp / scale, deep / scale


def _warn(inp, out):
    row = compare(inp, out, period=4)
    return row, gain_warning({"stacks": [dict(row, name="s", crop=list(inp.shape))]})


def test_restoring_the_deep_slices_passes(scene):
    sharp, deep = scene
    row, notice = _warn(deep, sharp)
    assert row["shallow_correlation"] > 0.93, row
    assert row["sigma_deep_px"] > 1.0 and row["signal_deep"] < 0.9, row  # it degrades
    assert row["band_restored"] > 1.2 * row["band_input"], row
    assert row["contrast_restored"] > 1.2 * row["contrast_input"], row
    assert notice is None, notice
    text = gain_text({"stacks": [dict(row, name="s", crop=[Z, N, N])]})
    assert "it beats its input there" in text and f"{row['band_input']:.3f}" in text


def test_identity_passes_and_blurring_the_deep_slices_fails(scene):
    _, deep = scene
    assert _warn(deep, deep)[1] is None  # the input itself: ratios equal, no failure
    worse = depth_blur(deep, depth_profile(Z, 0.0, 1.5))
    row, notice = _warn(deep, worse)
    assert row["band_restored"] < 0.95 * row["band_input"], row
    assert notice and notice.startswith("this DQLR model does not beat its input on its "
                                        "training stack: ")
    assert "band power above noise" in notice and "--n-predict 2" in notice
    assert f"{row['band_input']:.3f} (input) -> {row['band_restored']:.3f}" in notice
    text = gain_text({"stacks": [dict(row, name="s", crop=[Z, N, N])]})
    assert "does not beat its input there" in text


def test_an_output_unrelated_to_the_input_fails_although_its_ratios_are_flat(scene):
    _, deep = scene
    junk = gaussian_filter(np.random.default_rng(1).normal(0.5, 0.2, deep.shape),
                           (0, 1, 1)).astype(np.float32)
    row, notice = _warn(deep, junk)
    assert row["shallow_correlation"] < 0.2 and row["band_restored"] > row["band_input"], row
    assert notice and "no longer resemble the input" in notice


def test_a_texture_on_the_latent_grid_fails(scene):
    sharp, deep = scene
    yy, xx = np.mgrid[:N, :N]
    grid = 0.05 * np.cos(2 * np.pi * xx / 4) * np.cos(2 * np.pi * yy / 4)
    row, notice = _warn(deep, sharp + grid[None].astype(np.float32))
    assert row["grid_input"] < 1.1 < row["grid_restored"], row
    assert notice and "latent grid" in notice and "--upsample bilinear" in notice


def test_a_stack_without_depth_degradation_has_nothing_to_restore():
    m = phantoms.membranes((Z, N, N), cell_diameter=24, seed=1).astype(np.float32)
    flat = gaussian_filter(m, (0.0, 0.7, 0.7))
    flat = flat / np.percentile(flat, 99.8) + \
        np.random.default_rng(0).normal(0.0, 0.01, flat.shape).astype(np.float32)
    row, notice = _warn(flat, flat)  # the identity: only the stack itself can fail
    assert row["sigma_deep_px"] < 0.5 and row["signal_deep"] >= 0.95, row
    assert notice and "no measurable depth degradation" in notice
    assert "nothing to restore" in notice and "--n-predict" not in notice


def test_nothing_measured_says_so():
    assert gain_warning(None) is None and gain_warning({"stacks": []}) is None
    assert "not measured" in gain_text(None)
    flat = np.zeros((Z, N, N), np.float32)  # an empty crop: measured, nothing to compare
    row = compare(flat, flat, period=4)
    assert "shallow_correlation" not in row
    assert "nothing to restore" in gain_warning({"stacks": [dict(row, name="s",
                                                                  crop=[Z, N, N])]})


def test_train_cli_warns_records_and_export_and_card_say_it(tmp_path, scene):
    from sharpstack.io import as_dataarray, write_tiff
    from sharpstack.methods.dqlr.package import package_request
    from sharpstack.workflows import load_run

    _, deep = scene
    path = tmp_path / "stack.tif"
    write_tiff(path, as_dataarray((deep * 2000 + 100).clip(0).astype(np.uint16), "ZYX",
                                  {"z": 0.5, "y": 0.2, "x": 0.2}))
    run = tmp_path / "run"
    # an untrained network (learning rate 1e-9) cannot beat its input
    res = runner.invoke(app, ["train", "dqlr", str(path), str(run), "--hidden", "8",
                              "--rnn-hidden", "8", "--res-hidden", "4", "--code-dim", "8",
                              "--codes", "16", "--down", "1", "--res-blocks", "1",
                              "--patch-size", "16", "--batch-size", "4", "--clips", "32",
                              "--epochs", "1", "--steps-per-epoch", "1", "--lr", "1e-9",
                              "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "warning: this DQLR model does not beat its input on its training stack" \
        in res.output
    info = json.loads((run / "run.json").read_text())
    gain = next(v["input_gain"] for v in walk(info) if isinstance(v, dict)
                and "input_gain" in v)
    (row,) = gain["stacks"]
    assert row["name"] == "stack.tif" and row["crop"] == [Z, N, N]
    # its deep/shallow ratios come out near 1 (all slices equally wrong): the shallow
    # correlation is what catches it
    assert row["shallow_correlation"] < 0.5 and gain["seconds"] > 0, row
    assert "no longer resemble the input" in res.output
    loaded = load_run(run)
    with pytest.warns(UserWarning, match="does not beat its input"):
        req = package_request(loaded.trained, path, "stack", workdir=tmp_path)
    assert "does not beat its input there" in req.card_fields["self_check"]
    template_has = "{self_check}" in req.card_template
    assert template_has
