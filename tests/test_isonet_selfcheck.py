"""IsoNet says when a trained model does not beat its input on its own training stack
(methods/isonet/selfcheck.py): fresh pairs degraded like the training inputs, and the
background noise of the restored stack. Tiny synthetic data, seeded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sharpstack import phantoms
from sharpstack import psf as psfmod
from sharpstack.cli import app
from sharpstack.methods.isonet import IsoNetConfig, acquisition, train_isonet
from sharpstack.methods.isonet.selfcheck import gain_text, gain_warning, input_gain

from ._cli import walk

runner = CliRunner()


@pytest.fixture(scope="module")
def noisy_nuclei():
    gt = phantoms.nuclei((64, 64, 64), seed=1, density=16 / 64**3)
    h = psfmod.gaussian_psf(2.0, 8.0)
    aniso = acquisition.form_image(gt, h, 8, poisson_peak=200, gauss_sigma=0.01, seed=1)
    return aniso, h


def _train(stack, h, *, epochs, steps, lr):
    cfg = IsoNetConfig(factor=8, base=8, kernel=5, dropout=0.0, patch_size=32, n_patches=256,
                       batch_size=16, epochs=epochs, steps_per_epoch=steps, patience=None,
                       lr=lr)
    return train_isonet(stack, h, cfg)


def test_an_untrained_model_does_not_beat_its_input(noisy_nuclei):
    stack, h = noisy_nuclei
    gain = input_gain(_train(stack, h, epochs=1, steps=1, lr=1e-9), stack, h)
    assert gain["psnr_restored_db"] < gain["psnr_input_db"]
    notice = gain_warning(gain)
    assert notice and "does not beat its input" in notice and "dB" in notice
    assert "does not beat its input there" in gain_text(gain)


def test_a_trained_model_beats_its_input_and_lowers_the_noise(noisy_nuclei):
    stack, h = noisy_nuclei
    gain = input_gain(_train(stack, h, epochs=6, steps=8, lr=5e-3), stack, h)
    assert gain["psnr_restored_db"] > gain["psnr_input_db"] + 1.0, gain
    assert gain["background_std_growth"] < 0.0, gain
    assert gain_warning(gain) is None
    assert "it beats its input there" in gain_text(gain)


def test_noise_amplification_alone_is_warned():
    gain = {"psnr_input_db": 20.0, "psnr_restored_db": 25.0, "patches": 64, "slices": 8,
            "background_std_input": 0.02, "background_std_restored": 0.03,
            "background_std_growth": 0.5}
    notice = gain_warning(gain)
    assert notice and "+50%" in notice and "noise" in notice and "dB" not in notice
    assert gain_warning({**gain, "background_std_restored": 0.021,
                         "background_std_growth": 0.05}) is None
    assert gain_warning(None) is None and "not measured" in gain_text(None)


def test_train_cli_warns_records_and_the_card_says_it(tmp_path):
    from sharpstack.io import as_dataarray, write_tiff
    from sharpstack.methods.isonet.package import card_fields
    from sharpstack.methods.isonet.task import IsoNetModel

    rng = np.random.default_rng(0)
    arr = (rng.poisson(phantoms.nuclei((10, 48, 48), seed=2, density=4 / 48**3) * 50 + 5)
           ).astype(np.uint16)
    path = tmp_path / "stack.tif"
    write_tiff(path, as_dataarray(arr, "ZYX", {"z": 0.32, "y": 0.08, "x": 0.08}))
    res = runner.invoke(app, ["train", "isonet", str(path), str(tmp_path / "run"),
                              "--epochs", "1", "--steps-per-epoch", "1", "--lr", "1e-9",
                              "--patches", "16", "--patch-size", "32", "--batch-size", "4",
                              "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "does not beat its input on its training stack" in res.output
    text = (tmp_path / "run" / "run.json").read_text()
    run = json.loads(text)
    assert '"input_gain"' in text
    gain = next(v for v in walk(run) if isinstance(v, dict) and "psnr_input_db" in v)
    from types import SimpleNamespace

    model = IsoNetModel(net=None, config=IsoNetConfig(factor=4), normalizer=None,
                        result=SimpleNamespace(history=[], best_epoch=0))
    fields = card_fields(model, deployable="isotropic", halo=8, psf_text="", training_data="",
                         input_gain=gain)
    assert "does not beat its input there" in fields["self_check"]


def test_spot_widths_see_lateral_broadening_without_ground_truth():
    from scipy import ndimage as ndi

    from sharpstack.methods.isonet.selfcheck import spot_widths

    rng = np.random.default_rng(0)
    vol = np.zeros((64, 64, 64), np.float32)
    for _ in range(12):
        vol[tuple(rng.integers(10, 54, size=3))] = rng.uniform(0.5, 1.0)
    psf = psfmod.gaussian_psf(1.5, 4.0)
    up = ndi.gaussian_filter(vol, (4.0, 1.5, 1.5))
    same = spot_widths(up, up, psf)
    assert same["spots"] >= 5 and abs(same["spot_lateral_growth"]) < 1e-6
    broad = spot_widths(up, ndi.gaussian_filter(vol, (1.5, 2.0, 2.0)), psf)
    assert broad["spot_fwhm_z_restored"] < 0.6 * broad["spot_fwhm_z_input"]
    assert 0.2 < broad["spot_lateral_growth"] < 0.45, broad
    notice = gain_warning({"background_std_growth": -0.5, **broad})
    assert notice and "broadens" in notice and "laterally" in notice
    assert spot_widths(up, up, None) == {}  # no PSF: not measured
