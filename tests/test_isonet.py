"""IsoNet: networks, deploy modules, training pairs, loss, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sharpstack import psf as psfmod
from sharpstack.errors import InputError
from sharpstack.methods.isonet import (IsoNetConfig, make_training_pairs, negative_psnr_loss,
                                       restore, train_isonet)
from sharpstack.methods.isonet import acquisition, optics
from sharpstack.methods.isonet.isonet_arch import (IsoNetDeploy, SRCNN2D, UNet2D,
                                                   ZUpsampleLinear, receptive_radius)


@pytest.mark.parametrize("factor", [1, 3, 4, 8])
def test_zupsample_matches_numpy_convention(factor):
    x = np.random.default_rng(0).random((5, 3, 4)).astype(np.float32)
    got = ZUpsampleLinear(factor)(torch.from_numpy(x)[None, None])[0, 0].numpy()
    want = acquisition.upsample_linear(x, factor, axis=0)
    assert got.shape == (5 * factor, 3, 4)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got[::factor], x, atol=1e-6)


@pytest.mark.parametrize("arch,kw", [("unet", {}), ("unet", {"kernel": 3, "base": 4}),
                                     ("srcnn", {})])
def test_receptive_radius_bounds_the_true_support(arch, kw):
    torch.manual_seed(0)
    net = (UNet2D(dropout=0.0, **kw) if arch == "unet" else SRCNN2D(dropout=0.0)).eval()
    n = 128
    x0 = torch.zeros(1, 1, n, n)
    x1 = x0.clone()
    x1[0, 0, n // 2, n // 2] = 1.0
    with torch.no_grad():
        d = (net(x1) - net(x0)).abs()[0, 0]
    idx = torch.nonzero(d > 0)
    reach = int((idx - n // 2).abs().max())
    assert 0 < reach <= receptive_radius(arch, **kw)


def test_unet_predicts_residual():
    net = UNet2D(dropout=0.0).eval()
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(net(x), x)


def test_bias_free_unet_is_scale_equivariant_and_the_default():
    """Without biases a dim and a bright copy of one input are restored alike (f(ax) = a f(x)
    for a > 0); the paper's U-Net with biases is not. Bias-free is the default network."""
    torch.manual_seed(0)
    x = torch.rand(1, 1, 32, 32)
    free, biased = UNet2D(bias=False).eval(), UNet2D(bias=True).eval()
    assert not any(n.endswith("bias") for n, _ in free.named_parameters())
    for p in biased.parameters():  # random biases large enough to matter
        if p.dim() == 1:
            torch.nn.init.uniform_(p, -0.5, 0.5)
    with torch.no_grad():
        torch.testing.assert_close(free(5.0 * x), 5.0 * free(x), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(biased(5.0 * x), 5.0 * biased(x), rtol=1e-2, atol=1e-3)
    cfg = IsoNetConfig(factor=4)
    assert cfg.bias is False and cfg.arch_kwargs()["bias"] is False
    assert IsoNetConfig(factor=4, bias=True).arch_kwargs()["bias"] is True


@pytest.mark.parametrize("upsample", [False, True])
def test_deploy_module_equals_in_process_restore(upsample):
    torch.manual_seed(0)
    kw = {"base": 4, "kernel": 3, "dropout": 0.0}
    mod = IsoNetDeploy("unet", kw, factor=4, upsample=upsample).eval()
    raw = np.random.default_rng(1).random((8, 16, 24)).astype(np.float32)
    from sharpstack.normalize import PercentileNormalizer

    norm = PercentileNormalizer()
    x = raw if upsample else acquisition.upsample_linear(raw, 4, axis=0)
    with torch.no_grad():
        got = mod(torch.from_numpy(norm.before(x))[None, None])[0, 0].numpy()
    want = restore(mod.net, x, factor=4, upsampled=not upsample, normalizer=norm)
    assert got.shape == (32, 16, 24)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_restore_pads_to_the_unet_depth():
    """A depth-3 U-Net needs multiples of 8: restore pads any stack shape for it."""
    net = UNet2D(base=2, depth=3, kernel=3, dropout=0.0).eval()
    raw = np.random.default_rng(2).random((5, 20, 22)).astype(np.float32)
    out = restore(net, raw, factor=2)
    assert out.shape == (10, 20, 22) and np.isfinite(out).all()


def test_geometric_fusion_is_nonnegative_and_mean_fusion_differs():
    torch.manual_seed(0)
    kw = {"base": 4, "kernel": 3, "dropout": 0.0}
    g = IsoNetDeploy("unet", kw, factor=1, fuse="geometric").eval()
    m = IsoNetDeploy("unet", kw, factor=1, fuse="mean").eval()
    m.load_state_dict(g.state_dict())
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        yg, ym = g(x), m(x)
    assert float(yg.min()) >= 0
    assert not torch.allclose(yg, ym)


def test_training_pairs_are_degraded_lateral_slices():
    rng = np.random.default_rng(0)
    stack = rng.random((3, 48, 48)).astype(np.float32)
    k = optics.lateral_kernel((2.0, 8.0), "split")
    X, Y = make_training_pairs(stack, k, 4, patch_size=32, n_patches=10, seed=0)
    assert X.shape == Y.shape == (10, 1, 32, 32)
    assert X.dtype == np.float32
    # every target patch is a crop of a lateral slice (as is or transposed) and its input the
    # same crop of that slice's degradation
    found = 0
    for x, y in zip(X[:, 0], Y[:, 0]):
        for img in [s for z in stack for s in (z, z.T)]:
            deg = acquisition.degrade_lateral(np.ascontiguousarray(img), k, 4, axis=0)
            for r in range(48 - 32 + 1):
                for c in range(48 - 32 + 1):
                    if np.array_equal(img[r:r + 32, c:c + 32], y):
                        np.testing.assert_allclose(deg[r:r + 32, c:c + 32], x, atol=1e-6)
                        found += 1
                        break
    assert found == 10


def test_training_pairs_reject_too_small_slices():
    with pytest.raises(InputError, match="patch_size"):
        make_training_pairs(np.zeros((2, 20, 20), np.float32), np.ones((1, 1)), 2,
                            patch_size=32, n_patches=4)


def test_negative_psnr_loss_analytic():
    t = torch.zeros(2, 1, 4, 4)
    p = torch.full((2, 1, 4, 4), 0.1)  # MSE 0.01 -> PSNR 20 dB
    assert float(negative_psnr_loss(p, t)) == pytest.approx(-20.0, abs=1e-4)


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(Exception, match="bogus"):
        IsoNetConfig(factor=4, bogus=1)
    with pytest.raises(Exception, match="multiple of 16"):
        IsoNetConfig(factor=4, patch_size=40)


def test_short_training_improves_on_interpolation():
    """A few dozen steps already beat linear interpolation on a small nuclei phantom."""
    from sharpstack import phantoms
    from sharpstack.metrics import psnr_normalized

    gt = phantoms.nuclei((64, 64, 64), seed=1, density=16 / 64**3)
    h = psfmod.gaussian_psf(2.0, 8.0)
    iso = acquisition.blur(gt, optics.isotropic_psf(h))
    aniso = acquisition.form_image(gt, h, 8, poisson_peak=None, gauss_sigma=0.0, seed=1)
    cfg = IsoNetConfig(factor=8, base=8, kernel=5, dropout=0.0, patch_size=32, n_patches=256,
                       batch_size=16, epochs=6, steps_per_epoch=8, patience=None, lr=5e-3)
    model = train_isonet(aniso, h, cfg)
    before = psnr_normalized(iso, acquisition.upsample_linear(aniso, 8, axis=0))
    after = psnr_normalized(iso, restore(model, aniso, factor=8))
    assert after > before + 1.0, (before, after)
    print(f"interpolation {before:.2f} dB, IsoNet {after:.2f} dB")


def test_train_rejects_nan_and_missing_psf():
    with pytest.raises(InputError, match="NaN"):
        train_isonet(np.full((4, 32, 32), np.nan, np.float32), None,
                     IsoNetConfig(factor=2, psf_mode="none"))
    with pytest.raises(InputError, match="needs a PSF"):
        train_isonet(np.zeros((4, 32, 32), np.float32), None, IsoNetConfig(factor=2))
