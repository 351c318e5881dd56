"""DQLR: no texture on the latent grid; the depth model measured from a stack; the
shallow-to-deep training pairs; the real-stack measures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sharpstack.methods.dqlr import DQLRConfig, make_datasets, synthetic_depth_stack
from sharpstack.methods.dqlr.dqlr_arch import Generator
from sharpstack.methods.dqlr.realmeasures import (band_power, depth_ratio,
                                                  foreground_contrast, grid_peak,
                                                  neighbour_ssim, signal_band)
from sharpstack.methods.dqlr.shallow_deep import ShallowDeepClips, estimate_depth_model
from sharpstack.normalize import PercentileNormalizer


def _fixed_generator(mode: str, bias: float) -> Generator:
    """A generator with fixed weights: the code copied by the head, every upsampling stage
    followed by a 3x3 binomial smoothing with a negative bias (a ReLU that cuts the dimmer
    half: what a trained decoder does to turn codes into bright structures on a dark
    background)."""
    gen = Generator(hidden=4, n_down=2, res_blocks=0, res_hidden=4, code_dim=1,
                    upsample=mode).eval()
    k = torch.tensor([1.0, 2.0, 1.0])
    k = k[:, None] * k[None, :] / 16.0
    with torch.no_grad():
        for m in (gen.head, *gen.ups, gen.tail):
            m.weight.zero_()
            m.bias.zero_()
            if m is gen.head:
                m.weight[:, 0, 1, 1] = 1.0
            else:
                m.weight[:] = k / m.weight.shape[1]
                if m is not gen.tail:
                    m.bias.fill_(bias)
    return gen


@pytest.mark.parametrize("bias", [-0.2, -0.3])
def test_generator_output_has_no_peak_at_the_latent_grid_period(bias):
    # quantised codes: every latent cell one of two codewords, neighbours independent
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2, (8, 1, 32, 32), generator=g).float() * 2 - 1
    peaks = {}
    for mode in ("bilinear", "nearest"):
        with torch.no_grad():
            peaks[mode] = grid_peak(_fixed_generator(mode, bias)(codes)[:, 0].numpy(), 4)
    # the first decoder (nearest) shows the texture on the 4-px grid (what the test is for)
    assert peaks["nearest"] > 5.0, peaks
    # the default (bilinear) one does not
    assert peaks["bilinear"] < 2.5, peaks


def test_grid_peak_known_answers():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(4, 64, 64))
    assert grid_peak(noise, 4) < 1.6
    comb = (np.arange(64) % 4 == 0).astype(float)
    grid = noise + 2.0 * (comb[None, None, :] + comb[None, :, None])
    assert grid_peak(grid, 4) > 10


def _normalised(d):
    return PercentileNormalizer(1.0, 99.8).before(d.degraded)


def test_depth_model_recovers_the_synthetic_degradation():
    d = synthetic_depth_stack("membranes", (24, 96, 96), seed=1, poisson_peak=200.0)
    m = estimate_depth_model(_normalised(d))
    # attenuation 0.3 from the first to the last slice, extra blur sqrt(3^2 - 1) = 2.83 px
    assert 0.2 < m.signal[-1] / m.signal[0] < 0.45, m.signal
    assert np.all(np.diff(m.sigma) >= 0) and m.sigma[0] == 0
    assert 1.8 < m.sigma[-1] < 3.8, m.sigma
    assert m.n_shallow == 8 and np.all(m.noise > 0)


def test_depth_blur_fit_sees_the_blur_of_sparse_nuclei():
    # sparse nuclei: the spectrum's lowest bins follow which nuclei a slice cuts; weighting
    # them by their SNR fitted 0.34 px at the deepest slice here (truth 2.35 px relative to
    # the shallow third)
    d = synthetic_depth_stack("nuclei", (48, 128, 128), seed=1, poisson_peak=50.0)
    m = estimate_depth_model(_normalised(d), min_shallow=5)
    assert 1.2 < m.sigma[-1] < 3.8, m.sigma


def test_settings_resolve_the_recipe_of_the_training_pairs():
    paper = DQLRConfig(pairs="self")
    assert (paper.n_predict, paper.lambda_ssim) == (2, 1.0)  # the paper's recipe
    new = DQLRConfig()
    assert new.pairs == "shallow_to_deep" and (new.n_predict, new.lambda_ssim) == (0, 0.3)
    assert new.shallow_fraction == 0.2
    given = DQLRConfig(n_predict=1, lambda_ssim=0.5)  # explicit values win
    assert (given.n_predict, given.lambda_ssim) == (1, 0.5)
    assert DQLRConfig(**new.model_dump()).n_predict == 0  # the record loads back


def test_neighbour_ssim_falls_with_noise_and_stays_for_continuing_structures():
    d = synthetic_depth_stack("membranes", (24, 64, 64), seed=3, poisson_peak=50.0)
    gt = neighbour_ssim(d.gt)
    noisy = neighbour_ssim(_normalised(d))
    assert np.isnan(gt[0]) and np.all(np.isfinite(gt[1:]))
    # structures continue from slice to slice: the ground truth's deep and shallow agree
    assert abs(np.nanmean(gt[16:]) - np.nanmean(gt[1:8])) < 0.05
    # the attenuated, noisy deep slices of the input look less like their neighbours
    assert np.nanmean(noisy[16:]) < np.nanmean(gt[16:]) - 0.15


def test_shallow_deep_pairs_degrade_shallow_clips_to_the_deep_look():
    d = synthetic_depth_stack("nuclei", (24, 64, 64), seed=2, poisson_peak=200.0)
    x = _normalised(d)
    m = estimate_depth_model(x, min_shallow=5)
    ds = ShallowDeepClips([x], [m], length=64, window=3, n_predict=2, patch=32,
                          rows=[(0, 64)], seed=0, augment=True)
    a, b = ds[7], ds[7]
    assert all(torch.equal(u, v) for u, v in zip(a, b))  # seeded
    assert a[0].shape == a[1].shape == (1, 5, 32, 32)
    plain = ShallowDeepClips([x], [m], length=64, window=3, n_predict=2, patch=32,
                             rows=[(0, 64)], seed=0, augment=False)
    deep = []
    for i in range(64):
        inp, tgt, info = plain.pair(i)
        z0, y0, x0 = info["source"], info["y"], info["x"]
        zi = np.clip(np.arange(z0, z0 + 5), 0, None)
        # the target is the clip as acquired, from the shallow part
        np.testing.assert_array_equal(tgt, x[zi, y0:y0 + 32, x0:x0 + 32])
        assert zi.max() < m.n_shallow and info["depth"] >= max(z0, 0)
        if info["depth"] >= 16:
            deep.append((inp, tgt))
    assert len(deep) >= 5
    inp = np.stack([i for i, _ in deep])[:, 2]
    tgt = np.stack([t for _, t in deep])[:, 2]
    # degraded to the deep look: dimmer and blurrier (less foreground contrast)
    assert inp.mean() < 0.7 * tgt.mean()
    assert foreground_contrast(inp).mean() < 0.6 * foreground_contrast(tgt).mean()


def test_make_datasets_builds_pairs_by_default_and_self_clips_for_the_paper_mode():
    d = synthetic_depth_stack("membranes", (16, 64, 64), seed=3)
    x = _normalised(d)
    base = dict(patch_size=16, n_clips=8, val_clips=2, hidden=8)
    data = make_datasets([x], DQLRConfig(**base))
    assert len(data.train[0]) == 2 and len(data.val[0]) == 2
    paper = make_datasets([x], DQLRConfig(**base, pairs="self"))
    assert len(paper.train[0]) == 1


def test_real_measures_follow_contrast_and_ignore_white_noise():
    d = synthetic_depth_stack("membranes", (18, 64, 64), seed=4, poisson_peak=500.0)
    x = _normalised(d)
    c = foreground_contrast(x)
    assert depth_ratio(c) < 0.6  # attenuation and blur
    band = signal_band(x)
    assert 0.03 <= band[0] < band[1] <= 0.5
    bp = band_power(x, band)
    assert depth_ratio(bp) < 0.5
    noisy = x + np.random.default_rng(0).normal(0, 0.1, x.shape).astype(np.float32)
    # white noise moves neither measure much
    assert abs(depth_ratio(band_power(noisy, band)) - depth_ratio(bp)) < 0.15
    assert abs(depth_ratio(foreground_contrast(noisy)) - depth_ratio(c)) < 0.15
