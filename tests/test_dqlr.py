"""DQLR: networks, quantiser, deploy module, data, loss, training; depth-dependent image
formation and the slice-wise Richardson-Lucy baseline."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from sharpstack import baselines
from sharpstack.errors import InputError
from sharpstack.methods.dqlr import (DQLRClips, DQLRConfig, dqlr_loss, make_datasets,
                                     prepare_stacks, restore, synthetic_depth_stack,
                                     train_dqlr)
from sharpstack.methods.dqlr import baseline, depth
from sharpstack.methods.dqlr.dqlr_arch import (DQLRDeploy, DQLRNet, EMAQuantizer, halo_for,
                                               receptive_field, usage_stats)

# a tiny network: fast to run, still every part (2 down stages, residual blocks, recurrence)
TINY_NET = {"hidden": 8, "n_down": 2, "res_blocks": 1, "res_hidden": 4, "code_dim": 8,
            "num_codes": 16, "rnn_hidden": 8}
TINY_CFG = {"hidden": 8, "res_blocks": 1, "res_hidden": 4, "code_dim": 8, "num_codes": 16,
            "rnn_hidden": 8, "patch_size": 16, "batch_size": 4, "n_clips": 32,
            "val_clips": 4, "epochs": 2, "steps_per_epoch": 2, "patience": None}


def _deploy(cell="lstm", down=True, quantize=True, window=3, seed=0, ens=0):
    torch.manual_seed(seed)
    kw = dict(TINY_NET, rnn_cell=cell, quantize=quantize)
    return DQLRDeploy(kw, window=window, depth_increases_with_z=down,
                      ensemble_predictions=ens).eval(), kw


# ---------------------------------------------------------------------------- deploy module

@pytest.mark.parametrize("cell,down,ens", [("lstm", True, 0), ("gru", False, 2)])
def test_deploy_traces_and_exports_to_onnx_for_any_stack_size(tmp_path, cell, down, ens):
    import onnxruntime as ort

    from sharpstack.export.weights import export_onnx, export_torchscript

    mod, _ = _deploy(cell, down, ens=ens)
    example = torch.rand(1, 1, 6, 32, 40)
    export_torchscript(mod, example, tmp_path / "m.pt")
    export_onnx(mod, example, tmp_path / "m.onnx", space_axes=3)
    traced = torch.jit.load(str(tmp_path / "m.pt"))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    import onnx

    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == 17
    for shape in [(1, 1, 1, 16, 16), (1, 1, 9, 48, 24), (2, 1, 4, 20, 36)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            want = mod(x)
            got_ts = traced(x)
        got_onnx = sess.run(None, {"input": x.numpy()})[0]
        assert want.shape == x.shape
        torch.testing.assert_close(got_ts, want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(got_onnx, want.numpy(), atol=1e-4)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("down", [True, False])
def test_receptive_field_bounds_the_true_support(cell, down):
    mod, kw = _deploy(cell, down, quantize=False)  # the lookup hides small perturbations
    n, z = 128, 9
    x0 = torch.zeros(1, 1, z, n, n)
    x1 = x0.clone()
    x1[0, 0, z // 2, n // 2, n // 2] = 1.0
    with torch.no_grad():
        d = (mod(x1) - mod(x0)).abs()[0, 0]
    idx = torch.nonzero(d > 0)
    lateral = int((idx[:, 1:] - n // 2).abs().max())
    offsets = sorted(set((idx[:, 0] - z // 2).tolist()))
    lat_bound, z_halo = receptive_field(kw, 3)
    assert 0 < lateral <= lat_bound
    # causal along depth: a slice influences itself and the window-1 deeper slices only
    assert offsets == ([0, 1, 2] if down else [-2, -1, 0]) and z_halo == 2
    h_lat, h_z = halo_for(kw, 3)
    assert h_lat >= lat_bound and h_lat % 4 == 0 and h_z == 2


@pytest.mark.parametrize("down", [True, False])
def test_z_window_makes_crops_exact(down):
    """Any output slice computed from a crop with window-1 slices of context equals the
    whole-stack result: what makes tiled prediction with a z halo of window-1 exact."""
    mod, _ = _deploy("lstm", down)
    x = torch.rand(1, 1, 12, 24, 24)
    with torch.no_grad():
        full = mod(x)
        a, b = 5, 9
        lo, hi = (a - 2, b) if down else (a, b + 2)
        part = mod(x[:, :, lo:hi])
    sel = slice(a - lo, a - lo + (b - a))
    torch.testing.assert_close(part[:, :, sel], full[:, :, a:b], atol=1e-6, rtol=0)
    # without enough context the first (down) / last (up) slices change (seen without the
    # codeword lookup, which can hide a small change)
    plain, _ = _deploy("lstm", down, quantize=False)
    with torch.no_grad():
        short, ref = plain(x[:, :, a:b]), plain(x)[:, :, a:b]
    edge = 0 if down else -1
    assert float((short[:, :, edge] - ref[:, :, edge]).abs().max()) > 1e-6
    inner = slice(2, None) if down else slice(None, -2)
    torch.testing.assert_close(short[:, :, inner], ref[:, :, inner], atol=1e-6, rtol=0)


def test_restore_equals_the_deploy_module_and_pads_lateral_sizes():
    mod, _ = _deploy("lstm", True)
    from sharpstack.normalize import PercentileNormalizer

    norm = PercentileNormalizer()
    raw = np.random.default_rng(0).random((11, 24, 28)).astype(np.float32) * 100
    with torch.no_grad():
        want = mod(torch.from_numpy(norm.before(raw))[None, None])[0, 0].numpy()
    got = restore(mod, raw, normalizer=norm, chunk=3)
    np.testing.assert_allclose(got, want, atol=1e-5)
    odd = restore(mod, raw[:, :22, :27], normalizer=norm, chunk=4)
    assert odd.shape == (11, 22, 27) and np.isfinite(odd).all()


# ---------------------------------------------------------------------------- quantiser

def test_lookup_returns_the_nearest_codeword():
    torch.manual_seed(0)
    q = EMAQuantizer(num_codes=10, dim=3).eval()
    y = torch.randn(2, 3, 4, 5)
    out = q.lookup(y)
    flat = y.permute(0, 2, 3, 1).reshape(-1, 3)
    nearest = torch.cdist(flat, q.embedding).argmin(1)
    want = q.embedding[nearest].reshape(2, 4, 5, 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, want)
    # forward in eval mode agrees and changes no state
    before = q.embedding.clone()
    q_st, commit, codes = q(y)
    torch.testing.assert_close(q_st, want)
    torch.testing.assert_close(q.embedding, before)
    assert torch.equal(codes.reshape(-1), nearest)
    assert float(commit) == pytest.approx(0.25 * float(((y - want) ** 2).mean()), rel=1e-5)


def test_ema_codebook_moves_to_the_data_and_restarts_dead_codewords():
    torch.manual_seed(0)
    q = EMAQuantizer(num_codes=8, dim=2, decay=0.5, restart_threshold=1.0).train()
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])

    def batch():
        pts = centres[torch.randint(0, 4, (256,))] + 0.05 * torch.randn(256, 2)
        return pts.t().reshape(1, 2, 16, 16)

    q(batch())  # initialises from the batch
    q.embedding[0] = torch.tensor([100.0, 100.0])  # a codeword no vector will choose
    q.embed_avg[0] = q.embedding[0]
    for _ in range(30):
        q(batch())
    assert int(q.restarts) >= 1
    assert float(q.embedding.abs().max()) < 10.0  # the dead codeword was moved to the data
    d = torch.cdist(centres, q.embedding).min(1).values
    assert float(d.max()) < 0.5  # every cluster has a codeword on it
    with torch.no_grad():
        _, _, codes = q.eval()(batch())
    perplexity, used = usage_stats(codes, 8)
    assert used >= 4 and 3.5 <= perplexity <= 8.0


def test_usage_stats_known_answers():
    assert usage_stats(torch.arange(8), 8) == pytest.approx((8.0, 8))
    assert usage_stats(torch.zeros(10, dtype=torch.long), 8) == pytest.approx((1.0, 1))


def test_forward_clip_shapes_and_ablation():
    torch.manual_seed(0)
    clip = torch.rand(2, 1, 5, 16, 16)
    net = DQLRNet(**TINY_NET).train()
    out, commit, codes = net.forward_clip(clip, 3)
    assert out.shape == (2, 1, 3, 16, 16) and codes.shape == (6, 4, 4) and float(commit) > 0
    abl = DQLRNet(**dict(TINY_NET, quantize=False)).train()
    out, commit, codes = abl.forward_clip(clip, 3)
    assert out.shape == (2, 1, 3, 16, 16) and codes is None and float(commit) == 0.0
    loss, logs = dqlr_loss(out, clip[:, :, 2:], commit)
    loss.backward()
    assert set(logs) == {"mse", "ssim", "vq"}
    assert all(p.grad is not None for p in abl.encoder.parameters())


def test_loss_is_zero_for_a_perfect_reconstruction():
    x = torch.rand(2, 1, 3, 24, 24)
    loss, logs = dqlr_loss(x, x, torch.zeros(()))
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and logs["ssim"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- config and data

def test_config_rejects_unknown_keys_and_bad_sizes():
    with pytest.raises(ValidationError, match="windw"):
        DQLRConfig(windw=3)
    with pytest.raises(ValidationError, match="multiple of 2"):
        DQLRConfig(patch_size=50)
    with pytest.raises(ValidationError):
        DQLRConfig(num_codes=1)
    assert DQLRConfig().num_codes == 128 and DQLRConfig().decay == 0.99
    for name, f in DQLRConfig.model_fields.items():
        assert f.description, f"{name} has no description"


def test_bad_training_input_gets_clear_errors():
    cfg = DQLRConfig(**TINY_CFG)
    with pytest.raises(InputError, match="2D image"):
        prepare_stacks([np.ones((32, 32))], cfg)
    with pytest.raises(InputError, match="needs at least 3 consecutive slices"):
        prepare_stacks([np.random.rand(2, 32, 32)], cfg)  # window 3, no predicted slices
    paper = DQLRConfig(**{**TINY_CFG, "pairs": "self"})  # the paper's 2 predicted slices
    with pytest.raises(InputError, match="needs at least 5 consecutive slices"):
        prepare_stacks([np.random.rand(4, 32, 32)], paper)
    bad = np.random.rand(8, 32, 32)
    bad[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        prepare_stacks([bad], cfg)
    with pytest.raises(InputError, match="smaller than patch_size"):
        prepare_stacks([np.random.rand(8, 12, 32)], cfg)
    with pytest.raises(InputError, match="constant"):
        prepare_stacks([np.ones((8, 32, 32))], cfg)


def test_clips_are_deterministic_and_split_by_rows():
    cfg = DQLRConfig(**dict(TINY_CFG, augment=True))
    stack = np.random.default_rng(0).random((10, 48, 40)).astype(np.float32)
    (norm,), _ = prepare_stacks([stack], cfg)
    data = make_datasets([norm], cfg)
    a, b = data.train[3][0], data.train[3][0]
    assert a.shape == (1, 3, 16, 16) and torch.equal(a, b)  # window 3, no predicted slices
    # validation rows (the last max(16, 10% of 48) = 16 rows) are never in a training clip
    assert data.train.rows == [(0, 32)] and data.val.rows == [(32, 48)]
    # clips starting above the top repeat the first slice, as the deploy module pads
    plain = DQLRClips([norm], length=200, window=3, n_predict=2, patch=16, rows=[(0, 48)],
                      seed=0, augment=False)
    firsts = [plain[i][0][0] for i in range(200)]
    assert any(torch.equal(c[0], c[1]) for c in firsts)


def test_small_single_stack_falls_back_or_explains():
    cfg = DQLRConfig(**dict(TINY_CFG, patch_size=24))
    small = np.random.default_rng(1).random((8, 40, 40)).astype(np.float32)
    with pytest.raises(InputError, match="--patch-size"):
        make_datasets([small], cfg)
    data = make_datasets([small, small.copy()], cfg)  # the last stack validates
    assert len(data.val.stacks) == 1 and len(data.train.stacks) == 1


# ---------------------------------------------------------------------------- training

def test_train_dqlr_logs_codebook_usage_and_resumes(tmp_path):
    stack = synthetic_depth_stack("membranes", (10, 48, 48), seed=0).degraded
    cfg = DQLRConfig(**TINY_CFG)
    model = train_dqlr(stack, cfg, out_dir=tmp_path)
    h = model.result.history
    assert len(h) == 2
    for key in ("train_perplexity", "train_codes_used", "train_restarts", "val_perplexity"):
        assert key in h[-1] and np.isfinite(h[-1][key])
    assert 1.0 <= h[-1]["train_perplexity"] <= cfg.num_codes
    assert np.isfinite(h[-1]["val_loss"])
    assert model.codebook_usage()["train_codes_used"] >= 1
    out = restore(model, stack)
    assert out.shape == stack.shape and np.isfinite(out).all()
    # resume to 3 epochs from the weights-only checkpoint
    cfg3 = DQLRConfig(**dict(TINY_CFG, epochs=3))
    again = train_dqlr(stack, cfg3, out_dir=tmp_path, resume=True)
    assert [r["epoch"] for r in again.result.history] == [1, 2, 3]


def test_ablation_trains_without_codebook_logs():
    stack = synthetic_depth_stack("membranes", (8, 32, 32), seed=1).degraded
    model = train_dqlr(stack, DQLRConfig(**dict(TINY_CFG, quantize=False, epochs=1)))
    assert "train_perplexity" not in model.result.history[-1]
    assert not model.deploy().net.quantize


# ---------------------------------------------------------------------------- image formation

def test_depth_blur_widths_follow_depth():
    n = 5
    vol = np.zeros((n, 41, 41), np.float32)
    vol[:, 20, 20] = 1.0
    sig = [0.0, 1.0, 2.0, 3.0, 4.0]
    out = depth.depth_blur(vol, sig)
    yy, xx = np.mgrid[-20:21, -20:21]
    for z, s in enumerate(sig):
        assert out[z].sum() == pytest.approx(1.0, abs=1e-4)
        var = float((out[z] * yy ** 2).sum())
        assert var == pytest.approx(s ** 2, abs=0.05)
    # axial mixing: a single bright slice spreads with the width of each output depth
    plane = np.zeros((21, 8, 8), np.float32)
    plane[10] = 1.0
    sz = depth.depth_profile(21, 0.5, 3.0)
    mixed = depth.depth_blur(plane, 0.0, sz)
    assert mixed[10, 0, 0] > mixed[10 + 3, 0, 0] > 0
    np.testing.assert_allclose(depth.depth_blur(np.ones((6, 9, 9)), 2.0, 1.5), 1.0, atol=1e-5)
    with pytest.raises(InputError, match="one value per slice"):
        depth.depth_blur(vol, [1.0, 2.0])


def test_depth_and_baseline_public_names():
    assert set(depth.__all__) == {"depth_blur", "depth_profile"}
    assert set(baseline.__all__) == {"richardson_lucy_slicewise_best"}
    for mod in (depth, baseline):
        for name in mod.__all__:
            assert callable(getattr(mod, name)), name


def test_synthetic_protocol_degrades_with_depth():
    d = synthetic_depth_stack("membranes", (24, 64, 64), seed=2)
    assert d.degraded.shape == d.gt.shape == (24, 64, 64)
    assert d.sigma_xy[0] < d.sigma_xy[-1] and d.deconv_sigma[0] == 0.0
    assert d.attenuation[0] == pytest.approx(1.0) and d.attenuation[-1] == pytest.approx(0.3)
    assert d.degraded[:4].mean() > 2 * d.degraded[-4:].mean()  # attenuation
    from sharpstack.metrics import psnr_normalized

    # the GT is the shallow-quality stack: the first slice is close to it, the last far
    shallow = psnr_normalized(d.gt[:8], d.degraded[:8])
    deep = psnr_normalized(d.gt[-8:], d.degraded[-8:])
    assert shallow > deep + 3
    assert np.all(np.diff(d.sigma_xy) > 0) and np.all(np.diff(d.attenuation) < 0)


# ---------------------------------------------------------------------------- baseline

def test_slicewise_rl_matches_2d_rl_per_plane_and_sharpens():
    vol = np.zeros((3, 33, 33), np.float32)
    vol[:, 16, 16] = 1.0
    sig = [0.0, 1.5, 2.5]
    blurred = depth.depth_blur(vol, sig) + 1e-3
    out = baselines.richardson_lucy_slicewise(blurred, sig, iterations=20)
    np.testing.assert_array_equal(out[0], blurred[0])  # sigma 0: untouched
    k = baselines._gaussian_kernel_2d(2.5)
    want = baselines.richardson_lucy(blurred[2], k, iterations=20, axes="YX")
    np.testing.assert_allclose(out[2], want, atol=1e-6)
    assert out[1].max() > 2 * blurred[1].max() and out[2].max() > 2 * blurred[2].max()
    best = baseline.richardson_lucy_slicewise_best(blurred, sig, vol + 1e-3, (1, 20))
    assert set(best.scores) == {1, 20} and best.iterations in (1, 20)
    with pytest.raises(InputError, match="one Gaussian width per plane"):
        baselines.richardson_lucy_slicewise(blurred, [1.0, 2.0])
    with pytest.raises(InputError, match="negative"):
        baselines.richardson_lucy_slicewise(blurred - 1.0, sig)


def test_nothing_warns_on_the_deploy_path():
    mod, _ = _deploy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            mod(torch.rand(1, 1, 3, 16, 16))


# ---------------------------------------------------------------------------- plug-in

def test_plugin_options_and_recipe_load():
    from pathlib import Path

    from sharpstack.methods import get_method
    from sharpstack.methods.dqlr import DQLRSynth
    from sharpstack.zoo import load_recipe

    m = get_method("dqlr")
    fields = set(DQLRConfig.model_fields)
    assert all(o.key in fields for o in m.options)
    assert all(o.key in DQLRSynth.model_fields for o in m.synth_options)
    assert {"epochs", "steps_per_epoch"} <= fields
    assert [d.name for d in m.deployables] == ["stack"]
    assert "qupath" not in m.deployables[0].claims
    recipes = sorted((Path(__file__).resolve().parents[1] / "zoo").glob("dqlr-*.yaml"))
    assert recipes
    for r in recipes:
        rec = load_recipe(r)
        assert rec.method == "dqlr" and rec.deployables == ["stack"]
    # the demo's settings are valid settings
    DQLRConfig(**dict(m.demo.settings))
    DQLRSynth(**dict(m.demo.synth))


@pytest.mark.parametrize("down", [True, False])
def test_ensemble_averages_the_reconstruction_and_the_predictions(down):
    """Output slice t = mean of G(Q(code of the window ending at t)) and of the j-step
    predictions from the windows ending at t - j (computed here window by window)."""
    mod, _ = _deploy("gru", down, ens=2)
    net = mod.net
    x = torch.rand(1, 1, 7, 16, 16)
    with torch.no_grad():
        got = mod(x)[0, 0]
        xs = x[0, 0] if down else torch.flip(x[0, 0], dims=(0,))
        want = torch.zeros_like(xs)
        for t in range(7):
            imgs = []
            for j in range(3):
                end = t - j
                idx = [max(0, i) for i in range(end - 2, end + 1)]
                lat = net.encoder(xs[idx][:, None])
                state = None
                for k in range(3):
                    y, state = net.step(lat[k:k + 1], state)
                for _ in range(j):
                    y, state = net.step(y, state)
                imgs.append(net.generator(net.quantizer.lookup(y))[0, 0])
            want[t] = sum(imgs) / 3
        if not down:
            want = torch.flip(want, dims=(0,))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert mod.z_halo == 4


def test_ensemble_halo_covers_its_support_and_crops_are_exact():
    mod, kw = _deploy("lstm", True, quantize=False, ens=2)
    n, z = 96, 11
    x0 = torch.zeros(1, 1, z, n, n)
    x1 = x0.clone()
    x1[0, 0, 3, n // 2, n // 2] = 1.0
    with torch.no_grad():
        d = (mod(x1) - mod(x0)).abs()[0, 0]
    idx = torch.nonzero(d > 0)
    assert sorted(set((idx[:, 0] - 3).tolist())) == [0, 1, 2, 3, 4]
    lat, zh = receptive_field(kw, 3, 2)
    assert int((idx[:, 1:] - n // 2).abs().max()) <= lat and zh == 4
    x = torch.rand(1, 1, 12, 24, 24)
    with torch.no_grad():
        full, part = mod(x), mod(x[:, :, 2:10])
    torch.testing.assert_close(part[:, :, 4:], full[:, :, 6:10], atol=1e-6, rtol=0)
    with pytest.raises(ValidationError, match="cannot exceed n_predict"):
        DQLRConfig(n_predict=1, ensemble_predictions=2)
