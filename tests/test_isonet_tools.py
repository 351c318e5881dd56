"""Issue 20's IsoNet tooling: measured defaults, non-integer z/xy factors, the resampling to
isotropic voxels (``sharpstack resample``, ``predict --resample``) and PSFs measured from beads
(``sharpstack psf``). Tiny synthetic data, seeded."""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from sharpstack.cli import app

from .conftest import SHARED_DATA, needs_shared_data

runner = CliRunner()


def _plain(text: str) -> str:
    """Help text without Rich's box drawing and line breaks."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


# ------------------------------------------------------------------------------ 1. defaults
def test_defaults_are_the_measured_ones_and_the_papers_stay_reachable():
    from sharpstack.methods.isonet.settings import IsoNetConfig, IsoNetSettings

    cfg = IsoNetConfig(factor=4)
    assert cfg.lr == 1e-3 and cfg.dropout == 0.0
    assert IsoNetSettings().lr == 1e-3 and IsoNetSettings().dropout == 0.0
    paper = IsoNetConfig(factor=4, lr=5e-3, dropout=0.2)
    assert paper.arch_kwargs()["dropout"] == 0.2 and paper.lr == 5e-3


def test_train_help_names_units_and_the_papers_values():
    res = runner.invoke(app, ["train", "isonet", "--help"], terminal_width=200)
    assert res.exit_code == 0
    text = _plain(res.output)
    assert "sigma, in lateral pixels" in text and "axial sigma, in lateral pixels" in text
    assert "--lr 5e-3" in text and "--dropout 0.2" in text
    assert "(default: 0.001)" in text and "(default: 0.0)" in text


def test_card_template_states_the_defaults_and_the_papers_values():
    from importlib import resources

    card = resources.files("sharpstack.methods.isonet").joinpath("card.md").read_text("utf-8")
    assert "--lr 5e-3 --dropout 0.2" in card


# ------------------------------------------------------------------ 2. non-integer factors
def _tiny_stack(tmp_path, voxel, shape=(12, 48, 48), seed=0):
    from sharpstack.io import as_dataarray, write_tiff

    rng = np.random.default_rng(seed)
    arr = (rng.random(shape) * 200 + 20).astype(np.uint16)
    path = tmp_path / "stack.tif"
    write_tiff(path, as_dataarray(arr, "ZYX", voxel))
    return path


TRAIN_TINY = ["--epochs", "1", "--steps-per-epoch", "1", "--patches", "16", "--patch-size", "32",
              "--batch-size", "4", "--threads", "1"]


def test_resampling_any_factor_keeps_the_integer_convention():
    from sharpstack.methods.isonet import acquisition as degrade
    from sharpstack.resample import exact_factor, subsample, upsample

    x = np.random.default_rng(1).random((7, 3, 4)).astype(np.float32)
    for f in (2, 3, 8):
        up = upsample(x, f)
        assert up.shape == (7 * f, 3, 4) and np.array_equal(up[::f], x)  # input samples kept
        np.testing.assert_allclose(up[1], x[0] + (x[1] - x[0]) / f, rtol=1e-6)
        assert np.array_equal(up[-f:], np.repeat(x[-1:], f, axis=0))  # last sample held
        assert np.array_equal(subsample(x, f), x[::f])
        # IsoNet's training pairs use the same functions
        assert np.array_equal(degrade.upsample_linear(x, f), up)
        assert np.array_equal(degrade.subsample(x, f), x[::f])
    assert exact_factor(0.2 / 0.08) == 2.5 and exact_factor(3.0000000001) == 3
    np.testing.assert_allclose(upsample(np.array([0., 5., 10.]), 2.5),
                               [0, 2, 4, 6, 8, 10, 10, 10])
    np.testing.assert_allclose(subsample(np.arange(11.), 2.5), [0, 2.5, 5, 7.5, 10])


@pytest.mark.parametrize("factor", [2.5, 1.75, 4])
def test_deployed_upsampling_matches_numpy_for_fractional_factors(factor):
    import torch

    from sharpstack.methods.isonet.isonet_arch import ZUpsampleLinear
    from sharpstack.resample import upsample

    x = np.random.default_rng(2).random((8, 3, 5)).astype(np.float32)
    mod = ZUpsampleLinear(factor)
    got = mod(torch.from_numpy(x)[None, None])[0, 0].numpy()
    assert mod.ratio() == factor
    np.testing.assert_allclose(got, upsample(x, factor), atol=1e-6)
    assert got.shape[0] == int(np.ceil(8 * factor))


def test_fractional_training_pairs_sample_at_the_true_step():
    """A linear ramp along the axial direction is exactly restored by linear resampling at any
    step, so without blur and noise the degraded slice equals the original (up to the held
    tail); a ramp squared is not, and its error pattern repeats every 5 rows for f = 2.5."""
    from sharpstack.methods.isonet.fractional import degrade_lateral_any

    rows = np.arange(40, dtype=np.float32)[:, None] * np.ones((1, 8), np.float32)
    one = np.ones((1, 1), np.float32)
    out = degrade_lateral_any(rows, one, 2.5, axis=0)
    assert out.shape == rows.shape
    np.testing.assert_allclose(out[:38], rows[:38], atol=1e-4)
    sq = rows ** 2
    err = degrade_lateral_any(sq, one, 2.5, axis=0) - sq
    assert np.allclose(err[0::5], 0, atol=1e-3) and np.allclose(err[5:30], err[0:25], atol=1e-3)
    assert err[1, 0] > 0.1  # between samples: interpolated, not a copy of the original


def test_train_takes_a_ratio_of_2_5_exactly_from_the_calibration(tmp_path):
    from sharpstack.methods.isonet.package import isonet_axes
    from sharpstack.workflows import load_run

    stack = _tiny_stack(tmp_path, {"z": 0.2, "y": 0.08, "x": 0.08})
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "isonet", str(stack), str(run), *TRAIN_TINY])
    assert res.exit_code == 0, res.output
    model = load_run(run).model
    assert model.config.factor == 2.5
    assert "factor 2.5" in res.output and "is used exactly for training" not in res.output
    z = isonet_axes(model, deployable="upsample")[0]
    assert z.step % 2 == 0 and z.in_scale == 2.5 and z.halo % 5 == 0
    import torch

    mod = model.deploy(upsample=True)
    out = mod(torch.zeros(1, 1, z.min, 16, 16))
    assert out.shape[2] == z.min * 2.5
    # bioimageio names take letters, digits, _+- () only: no "x2.5" in the package's name
    from sharpstack.methods.isonet.package import package_request

    req = package_request(load_run(run).trained, stack, "upsample", workdir=tmp_path)
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+- ()")
    assert set(req.name) <= allowed, req.name
    assert "2.5x" in req.description


@pytest.mark.parametrize("factor", [2, 3, 5, 7, 8, 2.5, 2.23777, 1.75])
def test_the_upsample_package_runs_on_inputs_padded_by_its_halo(factor):
    """bioimageio.core pads the input by the (input-side) halo on both sides by default: a
    valid size plus twice the halo must be a valid size again (factor 3 and 9/4 failed)."""
    from fractions import Fraction

    import torch

    from sharpstack.methods.isonet.isonet_arch import fraction_of
    from sharpstack.methods.isonet.package import isonet_axes
    from sharpstack.methods.isonet.settings import IsoNetConfig
    from sharpstack.methods.isonet.isonet_arch import build_network
    from sharpstack.methods.isonet.task import IsoNetModel

    cfg = IsoNetConfig(factor=factor, depth=2, base=4)
    net = build_network(cfg.arch, **cfg.arch_kwargs())
    model = IsoNetModel(net=net, config=cfg, normalizer=None, result=None)
    z = isonet_axes(model, deployable="upsample")[0]
    p, q = fraction_of(factor)
    h_in = Fraction(z.halo) * q / p
    assert h_in.denominator == 1 and (2 * h_in) % z.step == 0
    mod = model.deploy(upsample=True).eval()
    with torch.no_grad():
        for n in range(3):
            size = z.min + n * z.step
            for padded in (size, size + 2 * int(h_in)):
                out = mod(torch.zeros(1, 1, padded, 8, 8))
                assert out.shape[2] == Fraction(padded * p, q)


def test_a_factor_the_upsample_network_cannot_take_is_announced_before_training(tmp_path):
    stack = _tiny_stack(tmp_path, {"z": 0.284, "y": 0.127, "x": 0.127})
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "isonet", str(stack), str(run), *TRAIN_TINY])
    assert res.exit_code == 0, res.output
    text = _plain(res.output)
    assert "factor 2.23622 is used exactly" in text and "upsample z by 9/4" in text
    assert text.index("warning") < text.index("trained 1 epochs")


@pytest.mark.parametrize("args", [["--factor", "1"], ["--voxel-size", "5,5,5"],
                                  ["--factor", "1.2"]])
def test_isotropic_sampling_is_refused_the_same_way(tmp_path, args):
    stack = _tiny_stack(tmp_path, {"z": 0.5, "y": 0.1, "x": 0.1})
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "isonet", str(stack), str(run), *TRAIN_TINY, *args])
    assert res.exit_code == 2, res.output
    assert "already (nearly) isotropic" in res.output and "Traceback" not in res.output
    assert not run.exists() or not (run / "model.pt").exists()


# ------------------------------------------------------------------ 3. resample, predict --resample
def test_resample_command_streams_and_writes_the_isotropic_calibration(tmp_path):
    from sharpstack.io import read_stack
    from sharpstack.resample import resample_file, resample_to_isotropic, upsample

    src = _tiny_stack(tmp_path, {"z": 0.2, "y": 0.08, "x": 0.08}, shape=(9, 20, 24))
    out = tmp_path / "iso.tif"
    res = runner.invoke(app, ["resample", str(src), str(out)])
    assert res.exit_code == 0, res.output
    assert "z x2.5: (9, 20, 24) -> (23, 20, 24)" in res.output
    got = read_stack(out)
    assert got.shape == (23, 20, 24) and got.dtype == np.uint16
    assert got.attrs["voxel_size"] == pytest.approx({"z": 0.08, "y": 0.08, "x": 0.08}, rel=1e-4)
    raw = np.asarray(read_stack(src).values)
    np.testing.assert_array_equal(got.values, np.rint(upsample(raw, 2.5)).astype(np.uint16))
    # slab by slab (3 output slices at a time) == in one go == another format
    small = resample_file(src, tmp_path / "slabs.tif", slab=3)
    assert small["factor"] == 2.5
    np.testing.assert_array_equal(read_stack(tmp_path / "slabs.tif").values, got.values)
    resample_file(src, tmp_path / "iso.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "iso.npy"), got.values)
    np.testing.assert_array_equal(resample_to_isotropic(read_stack(src)).values, got.values)


def test_resample_refuses_an_isotropic_stack_and_keeps_outputs(tmp_path):
    src = _tiny_stack(tmp_path, {"z": 5, "y": 5, "x": 5})
    res = runner.invoke(app, ["resample", str(src), str(tmp_path / "o.tif")])
    assert res.exit_code == 2 and "already (nearly) isotropic" in res.output
    assert not (tmp_path / "o.tif").exists()
    (tmp_path / "o.tif").write_bytes(b"keep")
    res = runner.invoke(app, ["resample", str(src), str(tmp_path / "o.tif"), "--factor", "2"])
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert (tmp_path / "o.tif").read_bytes() == b"keep"


def test_predict_warns_on_a_raw_stack_and_resample_equals_resampling_first(
        package_isotropic, synth_data, tmp_path):
    from sharpstack.io import read_stack

    raw = str(synth_data["paths"]["anisotropic"])  # z 1.6 um, xy 0.2 um
    warned = runner.invoke(app, ["predict", str(package_isotropic), raw,
                                 str(tmp_path / "bad.tif"), "--no-check"])
    assert warned.exit_code == 0, warned.output
    text = _plain(warned.output)
    assert "expects a stack resampled to isotropic voxels" in text and "--resample" in text
    res = runner.invoke(app, ["predict", str(package_isotropic), raw, str(tmp_path / "a.tif"),
                              "--no-check", "--resample"])
    assert res.exit_code == 0, res.output
    assert "expects a stack resampled" not in _plain(res.output)
    assert runner.invoke(app, ["resample", raw, str(tmp_path / "iso.tif")]).exit_code == 0
    res = runner.invoke(app, ["predict", str(package_isotropic), str(tmp_path / "iso.tif"),
                              str(tmp_path / "b.tif"), "--no-check"])
    assert res.exit_code == 0 and "expects a stack resampled" not in _plain(res.output)
    a, b = read_stack(tmp_path / "a.tif"), read_stack(tmp_path / "b.tif")
    assert a.shape == (64, 64, 64)
    np.testing.assert_allclose(a.values, b.values, atol=1e-5)
    assert a.attrs["voxel_size"]["z"] == pytest.approx(0.2, rel=1e-4)


# ------------------------------------------------------------------ 4. PSF from beads
SIG_XY, SIG_Z, DXY, DZ = 0.15, 0.45, 0.1, 0.25  # um: sigma on an anisotropic grid


def _bead_stack(seed=0):
    """Gaussian beads (sigma 0.15 um lateral, 0.45 um axial) on a 0.25 um z / 0.1 um xy grid,
    background 20, Poisson noise: 4 isolated, a close pair, one at the border, one
    saturated."""
    rng = np.random.default_rng(seed)
    shape = (40, 96, 96)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    img = np.full(shape, 20.0)
    isolated = [(14.3, 20.4, 22.7), (25.6, 22.2, 70.1), (20.2, 70.7, 24.4), (18.8, 60.3, 60.5)]
    pair = [(22.0, 45.0, 45.0), (22.5, 45.0, 50.5)]
    border = [(20.0, 3.0, 80.0)]
    saturated = [(12.0, 80.0, 45.0)]
    for (cz, cy, cx), amp in ([(c, 600.0) for c in isolated + pair + border]
                              + [(c, 5000.0) for c in saturated]):
        img += amp * np.exp(-0.5 * (((z - cz) * DZ / SIG_Z) ** 2
                                    + (((y - cy) ** 2 + (x - cx) ** 2) * DXY ** 2 / SIG_XY ** 2)))
    noisy = np.clip(rng.poisson(img), 0, 4095).astype(np.uint16)
    noisy[noisy >= 4095] = 65535  # the saturated bead clips at the dtype's maximum
    return noisy, isolated


def test_psf_from_synthetic_beads_recovers_the_fwhm_and_skips_bad_beads():
    from sharpstack.beads import FWHM_PER_SIGMA, measure_psf

    stack, isolated = _bead_stack()
    m = measure_psf(stack, {"z": DZ, "y": DXY, "x": DXY})
    assert m.n_beads == 4
    assert m.rejected == {"at the border": 1, "too close to another": 2, "saturated": 1}
    used = sorted(m.centres)
    for got, want in zip(used, sorted(isolated)):
        np.testing.assert_allclose(got, want, atol=0.25)  # sub-voxel centres
    truth = {"x": SIG_XY, "y": SIG_XY, "z": SIG_Z}
    for ax in "xyz":
        assert m.fwhm_um[ax] == pytest.approx(truth[ax] * FWHM_PER_SIGMA, rel=0.10), ax
        assert m.sigma_um[ax] == pytest.approx(truth[ax], rel=0.10), ax
    # the isotropic grid at the lateral pixel size, centred, sum 1, what --psf-file takes
    assert m.pixel_um == pytest.approx(DXY) and all(s % 2 == 1 for s in m.psf.shape)
    assert np.unravel_index(np.argmax(m.psf), m.psf.shape) == tuple(s // 2 for s in m.psf.shape)
    assert m.psf.sum() == pytest.approx(1.0, abs=1e-5) and m.psf.min() >= 0


def test_psf_command_writes_a_calibrated_psf_that_training_accepts(tmp_path):
    from sharpstack.io import as_dataarray, read_stack, write_tiff
    from sharpstack.methods.isonet.settings import PsfSpec

    stack, _ = _bead_stack()
    src = tmp_path / "beads.tif"
    write_tiff(src, as_dataarray(stack, "ZYX", {"z": DZ, "y": DXY, "x": DXY}))
    res = runner.invoke(app, ["psf", str(src), str(tmp_path / "psf.tif")])
    assert res.exit_code == 0, res.output
    assert "beads used: 4" in res.output and "FWHM x 0.3" in res.output
    psf = read_stack(tmp_path / "psf.tif")
    assert psf.attrs["voxel_size"] == pytest.approx({"z": DXY, "y": DXY, "x": DXY}, rel=1e-4)
    assert (tmp_path / "psf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    h = PsfSpec(kind="file", path=str(tmp_path / "psf.tif")).build()
    assert h.shape == psf.shape and h.sum() == pytest.approx(1.0, abs=1e-5)
    # no bead: a clear message, nothing written
    flat = tmp_path / "flat.tif"
    write_tiff(flat, as_dataarray(np.random.default_rng(0).poisson(20, (20, 32, 32))
                                  .astype(np.uint16), "ZYX", {"z": DZ, "y": DXY, "x": DXY}))
    res = runner.invoke(app, ["psf", str(flat), str(tmp_path / "none.tif"),
                              "--threshold", "500"])
    assert res.exit_code == 2 and "no bead above the threshold" in res.output
    assert not (tmp_path / "none.tif").exists()


@needs_shared_data
def test_psf_of_the_real_bead_stack_is_sensible(tmp_path):
    from sharpstack.beads import psf_file

    m, paths = psf_file(SHARED_DATA / "beads" / "Bead_Image1_crop.tif", tmp_path / "psf.tif")
    assert m.n_beads >= 3
    # a high-NA widefield bead: lateral FWHM 0.1-0.4 um, axial 2-6x the lateral
    for ax in "xy":
        assert 0.1 < m.fwhm_um[ax] < 0.4, m.fwhm_um
    lateral = (m.fwhm_um["x"] + m.fwhm_um["y"]) / 2
    assert 2 < m.fwhm_um["z"] / lateral < 6, m.fwhm_um
    assert paths["png"].is_file()
