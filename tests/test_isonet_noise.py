"""Issue 20 (quality): IsoNet's noise-aware training pairs, PSF files on any grid and the
real-data benchmark's measures. Tiny synthetic data, seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from typer.testing import CliRunner

from sharpstack.cli import app

runner = CliRunner()


def _structured(shape=(8, 128, 128), seed=0) -> np.ndarray:
    """Spots on a ramp from 2 to 150: flat and structured regions at many intensities."""
    rng = np.random.default_rng(seed)
    spots = ndi.gaussian_filter((rng.random(shape) > 0.995).astype(np.float32), (0.5, 3, 3))
    return spots / spots.max() * 400 + np.linspace(2, 150, shape[2])[None, None, :]


def _noisy(clean: np.ndarray, a: float, b: float, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.poisson(clean / a) * a + rng.normal(0, np.sqrt(b), clean.shape)).astype(
        np.float32)


# ------------------------------------------------------------------------------ noise model
@pytest.mark.parametrize("a,b", [(1.0, 25.0), (0.5, 100.0)])
def test_noise_estimate_recovers_a_and_b(a, b):
    from sharpstack.methods.isonet.noise import estimate_noise

    m = estimate_noise(_noisy(_structured(), a, b))
    assert m.a == pytest.approx(a, rel=0.2) and m.b == pytest.approx(b, rel=0.2), m


def test_noise_model_follows_an_affine_normalisation():
    from sharpstack.methods.isonet.noise import estimate_noise

    x = _noisy(_structured(), 1.0, 25.0)
    m = estimate_noise(x)
    g, o = 1 / 300.0, -0.1
    m2 = estimate_noise(g * x + o)
    s = m.scaled(g, o)
    for mean in (0.0, 0.3, 1.0):  # same variance predicted at the same normalised intensity
        assert m2.std_at(mean) == pytest.approx(s.std_at(mean), rel=0.1)


def test_anscombe_transform_stabilises_the_variance_and_inverts():
    from sharpstack.methods.isonet.noise import NoiseModel
    from sharpstack.methods.isonet.noise_pairs import gat, gat_inverse

    m = NoiseModel(a=2.0, b=16.0)
    for level in (5.0, 50.0, 500.0):
        x = _noisy(np.full((200, 200), level, np.float32), m.a, m.b, seed=int(level))
        assert gat(x, m).std() == pytest.approx(1.0, abs=0.08)
        ok = m.a * x + 0.375 * m.a**2 + m.b > 0  # below: clipped, not invertible
        assert ok.mean() > 0.9
        assert np.allclose(gat_inverse(gat(x, m), m)[ok], x[ok], atol=1e-3 * level)


# ------------------------------------------------------------------------------ pairs
@pytest.mark.parametrize("noisy_source", [False, True])
def test_noise_aware_inputs_are_as_noisy_as_the_stack(noisy_source):
    """On the acquired rows the degraded input has the stack's own noise level, whether the
    source was clean (denoised target) or noisy (blind-spot target); the paper's pairs are
    several times cleaner (the blur averages the noise away)."""
    from sharpstack.methods.isonet.data import make_training_pairs  # noqa: F401
    from sharpstack.methods.isonet.fractional import degrade_lateral_any
    from sharpstack.methods.isonet.noise import NoiseModel
    from sharpstack.methods.isonet.noise_pairs import degrade_noisy

    m = NoiseModel(a=1.0, b=25.0)
    level, f = 100.0, 4
    clean = np.full((256, 256), level, np.float32)
    src = _noisy(clean, m.a, m.b) if noisy_source else clean
    k = np.outer(np.exp(-0.5 * (np.arange(-12, 13) / 4.0) ** 2), [1.0]).astype(np.float32)
    k /= k.sum()
    rng = np.random.default_rng(0)
    x = degrade_noisy(src, k, f, m, src_noisy=noisy_source, rng=rng)
    acquired = x[::f, 20:-20]
    assert acquired.std() == pytest.approx(m.std_at(level), rel=0.1)
    paper = degrade_lateral_any(_noisy(clean, m.a, m.b), k, f)[::f, 20:-20]
    assert paper.std() < 0.5 * m.std_at(level)


def test_noise_aware_pairs_shapes_masks_and_targets():
    from sharpstack.methods.isonet.noise import estimate_noise
    from sharpstack.methods.isonet.noise_pairs import make_noise_aware_pairs

    stack = _noisy(_structured((6, 64, 64)), 1.0, 25.0) / 400.0
    noise = estimate_noise(stack)
    k = np.ones((5, 1), np.float32) / 5
    X, Y, M = make_noise_aware_pairs(stack, k, 3, noise, target="masked", patch_size=32,
                                     n_patches=16, seed=0)
    assert X.shape == Y.shape == M.shape == (16, 1, 32, 32)
    assert 0.01 < M.mean() < 0.05 and set(np.unique(M)) == {0.0, 1.0}
    Xd, Yd = make_noise_aware_pairs(stack, k, 3, noise, target="denoised", patch_size=32,
                                    n_patches=16, seed=0)
    # the denoised targets keep the signal but lose most of the noise
    hp = lambda a: a[:, 0] - ndi.uniform_filter(a[:, 0], (1, 3, 3))  # noqa: E731
    assert hp(Yd).std() < 0.6 * hp(Y).std()


def test_blind_spot_replaces_masked_pixels_by_neighbours():
    from sharpstack.methods.isonet.noise_pairs import blind_spot

    img = np.arange(48 * 48, dtype=np.float32).reshape(48, 48)  # every value unique
    out, mask = blind_spot(img, 6, np.random.default_rng(0))
    assert mask.sum() == 64  # one per 6x6 cell
    changed = out != img
    assert np.array_equal(changed, mask.astype(bool))
    r, c = np.nonzero(mask)
    src = np.argwhere(img[None] == out[r, c][:, None, None])[:, 1:]
    assert np.abs(src - np.stack([r, c], 1)).max() <= 2


def test_masked_loss_counts_only_masked_pixels():
    from sharpstack.methods.isonet.task import negative_psnr_loss

    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 1, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g)
    mask = torch.zeros_like(pred)
    mask[:, :, ::3, ::3] = 1
    base = negative_psnr_loss(pred, target, mask=mask)
    other = pred.clone()
    other[mask == 0] += 5.0  # unmasked pixels: no effect
    assert torch.allclose(negative_psnr_loss(other, target, mask=mask), base)
    other = pred.clone()
    other[mask == 1] += 0.5
    assert negative_psnr_loss(other, target, mask=mask) > base + 1
    assert torch.allclose(negative_psnr_loss(pred, target, mask=torch.ones_like(pred)),
                          negative_psnr_loss(pred, target))


# ------------------------------------------------------------------------------ training
TRAIN_TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--patches", "16", "--patch-size", "32",
              "--batch-size", "4", "--threads", "1"]


def _tiny(tmp_path, voxel={"z": 0.32, "y": 0.08, "x": 0.08}):
    from sharpstack.io import as_dataarray, write_tiff

    arr = _noisy(_structured((10, 48, 48)), 1.0, 25.0).clip(0, None).astype(np.uint16)
    path = tmp_path / "stack.tif"
    write_tiff(path, as_dataarray(arr, "ZYX", voxel))
    return path


@pytest.mark.parametrize("target", ["denoised", "masked"])
def test_noise_aware_training_records_the_noise_model(tmp_path, target):
    import json

    res = runner.invoke(app, ["train", "isonet", str(_tiny(tmp_path)), str(tmp_path / "run"),
                              "--noise-target", target, *TRAIN_TINY])
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    text = json.dumps(run)
    assert '"pairs": "noise-aware"' in text and f'"noise_target": "{target}"' in text
    assert '"noise_model": {"a"' in text
    # no PSF was given: the log says which default is used and what it assumes
    assert "no PSF given" in res.output and "sigma_z = 8" in res.output


# ------------------------------------------------------------------------------ PSF files
def test_psf_file_on_an_anisotropic_grid_is_resampled(tmp_path):
    from sharpstack.beads import fwhm_1d
    from sharpstack.errors import InputError
    from sharpstack.io import as_dataarray, write_tiff
    from sharpstack.methods.isonet.settings import PsfSpec
    from sharpstack.psf import gaussian_psf

    px = 0.1
    # sigma 2 px lateral, 6 px axial on the 0.1 um grid; written on a 0.3 um z / 0.05 um grid
    aniso = gaussian_psf(2 * 2.0, 6 / 3.0, shape=(15, 41, 41)) * 7 + 0.001  # + background
    path = tmp_path / "psf.tif"
    write_tiff(path, as_dataarray(aniso.astype(np.float32), "ZYX",
                                  {"z": 0.3, "y": 0.05, "x": 0.05}))
    h, notes = PsfSpec(kind="file", path=str(path), pixel_um=px).build_noted()
    assert h.sum() == pytest.approx(1.0, abs=1e-5) and all(s % 2 for s in h.shape)
    c = tuple(s // 2 for s in h.shape)
    ref = gaussian_psf(2.0, 6.0)
    rc = tuple(s // 2 for s in ref.shape)
    assert fwhm_1d(h[:, c[1], c[2]]) == pytest.approx(fwhm_1d(ref[:, rc[1], rc[2]]), rel=0.05)
    assert fwhm_1d(h[c[0], c[1], :]) == pytest.approx(fwhm_1d(ref[rc[0], rc[1], :]), rel=0.05)
    assert "resampled to isotropic 0.1 um" in notes[0]
    with pytest.raises(InputError, match="--pixel"):
        PsfSpec(kind="file", path=str(path)).build()
    np.save(tmp_path / "raw.npy", ref)  # no calibration: taken as is, and said
    h2, notes2 = PsfSpec(kind="file", path=str(tmp_path / "raw.npy"), pixel_um=px).build_noted()
    assert h2.shape == ref.shape and "no voxel size" in notes2[0]


# ------------------------------------------------------------------------------ measures
def test_spot_measures_recover_fwhm_and_background_noise():
    from sharpstack.methods.isonet.realbench import background_mask, background_std, spot_fwhm
    from sharpstack.psf import gaussian_psf

    vol = np.zeros((64, 64, 64), np.float32)
    centres = [(20, 20, 20), (40, 44, 40)]
    for c in centres:
        vol[c] = 1.0
    from sharpstack.methods.isonet.acquisition import blur

    clean = blur(vol, gaussian_psf(2.0, 5.0), mode="constant") * 1000 + 10
    f = spot_fwhm(clean, centres, radius=(15, 8))
    assert f["x"] == pytest.approx(2.3548 * 2, rel=0.05)
    assert f["z"] == pytest.approx(2.3548 * 5, rel=0.05) and f["n"] == 2
    # the mean spot's integrated intensity: 1000 per spot, most of it inside the crops
    assert 0.9 * 1000 < f["flux"] <= 1000 * 1.01
    assert f["peak"] == pytest.approx(1000 / ((2 * np.pi) ** 1.5 * 2 * 2 * 5), rel=0.1)
    noisy = clean + np.random.default_rng(0).normal(0, 2.0, clean.shape)
    mask = background_mask(clean.shape, centres, (15.0, 6.0), planes=range(0, 64, 4))
    assert background_std(noisy, mask) == pytest.approx(2.0, rel=0.05)
    assert not mask[20, 20, 20] and mask[:, :, :].sum() > 0 and not mask[1].any()


def test_bench_offers_the_real_data_benchmark_and_checks_its_arguments(tmp_path):
    from sharpstack.errors import InputError
    from sharpstack.methods.isonet.realbench import run_isonet_real

    res = runner.invoke(app, ["bench", "isonet", "--help"], terminal_width=200)
    assert res.exit_code == 0 and "--real" in res.output and "--pairs" in res.output
    with pytest.raises(InputError, match="unknown IsoNet variant"):
        run_isonet_real(tmp_path, variants=("noisy",))
    with pytest.raises(InputError, match="unknown real-data set"):
        run_isonet_real(tmp_path, datasets=("yeast",))
