"""Disentangled-representation deblurring: networks, data, losses, training, errors.

One tiny seeded synthetic defocus series and one tiny trained model (session fixtures) are
shared by these tests; the package and CLI tests live in test_disentangled_package.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sharpstack.errors import InputError

from ._dihedral import dihedral_mean

TINY = {"channels": [4, 8], "id_channels": 8, "patch_size": 32, "epochs": 2,
        "steps_per_epoch": 4, "batch_size": 4, "val_items": 4}


@pytest.fixture(scope="session")
def tiny_series():
    from sharpstack.methods.disentangled import synthetic_series

    series, gt = synthetic_series(6, 48, dz_um=(-2.0, -1.0, 0.0, 1.0, 2.0), seed=1)
    return series, gt


@pytest.fixture(scope="session")
def tiny_model(tiny_series, tmp_path_factory):
    from sharpstack.methods.disentangled import DisentangledConfig, train_disentangled

    series, _ = tiny_series
    run = tmp_path_factory.mktemp("dis_run")
    cfg = DisentangledConfig(variant="manifold1d", **TINY)
    return train_disentangled(series, cfg, out_dir=run), run


def _random_bn(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _tiny_manifold_task(**config):
    """A seeded ManifoldTask on a 4-8 channel network, its optimisers and its network."""
    from sharpstack.methods.disentangled import DisentangledConfig
    from sharpstack.methods.disentangled.disentangled_arch import DisentangledAE
    from sharpstack.methods.disentangled.losses import recon_loss_for
    from sharpstack.methods.disentangled.task import ManifoldTask

    cfg = DisentangledConfig(channels=[4, 8], id_channels=4, patch_size=16, epochs=1,
                             **config)
    torch.manual_seed(0)
    net = DisentangledAE(**cfg.arch_kwargs())
    task = ManifoldTask(net, cfg, recon_loss_for(cfg))
    return task, task.make_optimizers(), net


# ------------------------------------------------------------------------------ networks
@pytest.mark.parametrize("variational,skips,bn", [(False, 0, True), (True, 0, True),
                                                  (False, 3, True), (True, 2, True),
                                                  (False, 3, False), (True, 0, False)])
def test_deploy_module_traces_and_exports_to_onnx(variational, skips, bn, tmp_path):
    import onnxruntime as ort

    from sharpstack.export.weights import export_onnx, export_torchscript
    from sharpstack.methods.disentangled.disentangled_arch import DisentangledDeploy

    torch.manual_seed(0)
    m = DisentangledDeploy(channels=[4, 8], id_channels=6, blur_channels=3,
                           variational=variational, skip_channels=skips, batch_norm=bn)
    # without batch norm every 3x3 convolution has a bias instead
    norms = [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d) and x.kernel_size == (3, 3)]
    assert bool(norms) == bn and all((c.bias is None) == bn for c in convs[:-1])
    _random_bn(m)
    m.focus_code.copy_(torch.tensor([0.5, -1.0, 2.0]))
    m.eval()
    export_torchscript(m, torch.rand(1, 1, 32, 48), tmp_path / "m.pt")
    export_onnx(m, torch.rand(1, 1, 32, 48), tmp_path / "m.onnx", space_axes=2)
    x = torch.rand(2, 1, 64, 40)  # other batch and sizes than the example
    with torch.no_grad():
        ref = m(x)
        ts = torch.jit.load(str(tmp_path / "m.pt"))(x)
    onx = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x.numpy()})[0]
    assert ref.shape == x.shape
    assert torch.allclose(ref, ts, atol=1e-6)
    np.testing.assert_allclose(onx, ref.numpy(), atol=1e-5)


@pytest.mark.parametrize("skips", [0, 2])
def test_receptive_radius_bounds_the_dependence(skips):
    from sharpstack.methods.disentangled.disentangled_arch import (DisentangledDeploy,
                                                                   receptive_radius)

    torch.manual_seed(1)
    m = DisentangledDeploy(channels=[4, 8], id_channels=4, blur_channels=1,
                           skip_channels=skips).eval()
    for bn in m.modules():  # keep every ReLU of the random network alive
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.fill_(-1.0)
    radius = receptive_radius([4, 8])
    reach = 0
    for cy, cx in ((48, 48), (49, 50), (51, 47)):
        x = torch.rand(1, 1, 96, 96, requires_grad=True)
        m(x)[0, 0, cy, cx].backward()
        ys, xs = np.nonzero(x.grad[0, 0].numpy())
        reach = max(reach, cy - ys.min(), ys.max() - cy, cx - xs.min(), xs.max() - cx)
    assert 0 < reach <= radius


@pytest.mark.parametrize("skips", [0, 3])
def test_residual_decoder_starts_as_the_identity_and_exports(skips, tmp_path):
    """The residual decoder corrects its input: untrained it returns the input exactly, and
    once its last convolution is non-zero the traced and ONNX graphs compute the same."""
    import onnxruntime as ort

    from sharpstack.export.weights import export_onnx, export_torchscript
    from sharpstack.methods.disentangled.disentangled_arch import DisentangledDeploy

    torch.manual_seed(0)
    m = DisentangledDeploy(channels=[4, 8], id_channels=6, blur_channels=1,
                           skip_channels=skips, residual=True)
    _random_bn(m)
    m.focus_code.copy_(torch.tensor([0.7]))
    m.eval()
    x = torch.rand(2, 1, 64, 40)
    with torch.no_grad():
        assert torch.equal(m(x), x)
        last = m.ae.decoder.blocks[-1][-1]
        last.weight.normal_(0, 0.1)
        last.bias.fill_(0.05)
        ref = m(x)
    assert float((ref - x).abs().mean()) > 1e-3
    export_torchscript(m, torch.rand(1, 1, 32, 48), tmp_path / "m.pt")
    export_onnx(m, torch.rand(1, 1, 32, 48), tmp_path / "m.onnx", space_axes=2)
    with torch.no_grad():
        ts = torch.jit.load(str(tmp_path / "m.pt"))(x)
    onx = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x.numpy()})[0]
    assert torch.allclose(ref, ts, atol=1e-6)
    np.testing.assert_allclose(onx, ref.numpy(), atol=1e-5)
    # the codes do not see the base image: encode is that of the non-residual network
    plain = DisentangledDeploy(channels=[4, 8], id_channels=6, blur_channels=1,
                               skip_channels=skips)
    plain.ae.encoder.load_state_dict(m.ae.encoder.state_dict())
    plain.eval()
    with torch.no_grad():
        a, b = m.ae.encode(x), plain.ae.encode(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_self_ensemble_averages_the_eight_flips_and_rotations_and_exports(tmp_path):
    """The self-ensemble is the mean of the one-pass network over the dihedral group of the
    image: equivariant to flips and transposes (the one pass is not), exported to TorchScript
    and ONNX with the same result, the default of new runs and off for recorded ones."""
    import onnxruntime as ort

    from sharpstack.export.weights import export_onnx, export_torchscript
    from sharpstack.methods.disentangled import DisentangledConfig
    from sharpstack.methods.disentangled.disentangled_arch import DisentangledDeploy
    from sharpstack.methods.disentangled.plugin import Disentangled

    torch.manual_seed(3)
    kw = dict(channels=[4, 8], id_channels=6, blur_channels=1, skip_channels=2,
              residual=True, batch_norm=False)
    ens = DisentangledDeploy(**kw, self_ensemble=True)
    for p in ens.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ens.eval()
    one = DisentangledDeploy(**kw).eval()
    one.load_state_dict(ens.state_dict())
    x = torch.rand(2, 1, 32, 40)
    with torch.no_grad():
        ref = ens(x)
        assert torch.allclose(ref, dihedral_mean(one, x), atol=1e-5)
        assert torch.allclose(ens(torch.flip(x, [2])), torch.flip(ref, [2]), atol=1e-5)
        assert float((one(torch.flip(x, [2])) - torch.flip(one(x), [2])).abs().max()) > 1e-3
        assert float((one(x) - ref).abs().max()) > 1e-3
    export_torchscript(ens, torch.rand(1, 1, 32, 48), tmp_path / "m.pt")
    export_onnx(ens, torch.rand(1, 1, 32, 48), tmp_path / "m.onnx", space_axes=2)
    xb = torch.rand(1, 1, 64, 40)
    with torch.no_grad():
        r = ens(xb)
        ts = torch.jit.load(str(tmp_path / "m.pt"))(xb)
    onx = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": xb.numpy()})[0]
    assert torch.allclose(r, ts, atol=1e-5)
    np.testing.assert_allclose(onx, r.numpy(), atol=1e-5)
    assert DisentangledConfig().self_ensemble is True
    assert Disentangled.recorded_before["self_ensemble"] is False


def test_residual_is_the_default_of_the_manifold_models_only():
    from sharpstack.methods.disentangled import DisentangledConfig
    from sharpstack.methods.disentangled.plugin import Disentangled

    assert DisentangledConfig().arch_kwargs()["residual"] is True
    assert DisentangledConfig(variant="mlvae").arch_kwargs()["residual"] is False
    assert DisentangledConfig(residual=False).arch_kwargs()["residual"] is False
    # runs recorded before the options existed rebuild the decoder and losses they had
    assert Disentangled.recorded_before["residual"] is False
    assert Disentangled.recorded_before["w_deblur"] == 0.0
    assert DisentangledConfig().w_deblur > 0


def test_supervised_deblurring_term_acts_where_the_partner_is_in_focus():
    """The supervised term is logged and changes the gradient only when a batch holds a pair
    whose partner is its field's in-focus plane (dz 0) and whose first image is not."""
    def logs_for(dz_b: int, w: float) -> tuple[dict, torch.Tensor]:
        task, opts, net = _tiny_manifold_task(steps_per_epoch=1, w_deblur=w, supervised=0.0)
        g = torch.Generator().manual_seed(1)
        imgs = torch.rand(2, 3, 1, 16, 16, generator=g)
        dz = torch.tensor([[2, dz_b, 2], [1, dz_b, 1]])
        out = task.train_step((imgs, dz), opts)
        last = net.decoder.blocks[-1][-1].weight.detach().clone()
        return out, last

    with_focus, w1 = logs_for(0, 4.0)
    no_focus, _ = logs_for(-1, 4.0)
    off, w0 = logs_for(0, 0.0)
    assert with_focus["deblur"] > 0
    assert "deblur" not in no_focus and "deblur" not in off
    assert not torch.equal(w1, w0)


def test_decoding_a_residual_model_needs_its_base(tiny_model, tiny_series):
    from sharpstack.methods.disentangled import decode_codes, encode_images
    from sharpstack.methods.disentangled.model import prepare_images

    model, _ = tiny_model
    series, _ = tiny_series
    imgs = series.images[0, :2]
    idc, blur = encode_images(model, imgs)
    with pytest.raises(InputError, match="base"):
        decode_codes(model, idc, blur)
    out = decode_codes(model, idc, blur, base=prepare_images(model, imgs))
    assert out.shape == imgs.shape and np.all(np.isfinite(out))


@pytest.mark.parametrize("skips", [0, 3])
def test_deploy_is_fully_convolutional_tiled_equals_whole(skips):
    """Tiles on the pooling grid, each with a halo >= the receptive radius, give exactly the
    whole image's result: the stored blur code does not depend on the input."""
    from sharpstack.methods.disentangled.disentangled_arch import (DisentangledDeploy,
                                                                   receptive_radius)

    torch.manual_seed(2)
    m = DisentangledDeploy(channels=[4, 8], id_channels=4, blur_channels=2,
                           skip_channels=skips).eval()
    _random_bn(m, 3)
    m.focus_code.copy_(torch.tensor([1.0, -0.5]))
    x = torch.rand(1, 1, 96, 128)
    halo = 24  # >= radius 21, multiple of 4
    assert halo >= receptive_radius([4, 8])
    with torch.no_grad():
        whole = m(x)
        out = torch.zeros_like(whole)
        for y0 in (0, 48):
            for x0 in (0, 64):
                ys, xs = max(0, y0 - halo), max(0, x0 - halo)
                ye, xe = min(96, y0 + 48 + halo), min(128, x0 + 64 + halo)
                t = m(x[..., ys:ye, xs:xe])
                out[..., y0:y0 + 48, x0:x0 + 64] = t[..., y0 - ys:y0 - ys + 48,
                                                        x0 - xs:x0 - xs + 64]
    assert float((out - whole).abs().max()) < 1e-5


@pytest.mark.parametrize("variational", [False, True])
def test_skip_features_are_part_of_the_identity_code(variational):
    """With skips, the packed identity code holds every identity feature map: unpacking it
    gives them back exactly, decode(encode(x)) is what the deploy module computes with the
    same blur code, and changing only the blur code changes the output (the decoder uses it
    at every level) while the blur branch's weights never reach the identity code."""
    from sharpstack.methods.disentangled.disentangled_arch import (DisentangledAE,
                                                                   DisentangledDeploy)

    torch.manual_seed(4)
    ae = DisentangledAE(channels=[4, 8, 8], id_channels=5, blur_channels=1,
                        variational=variational, skip_channels=3).eval()
    _random_bn(ae, 5)
    x = torch.rand(2, 1, 32, 40)
    with torch.no_grad():
        feats = ae.encoder.identity_features(x)
        code, blur = ae.encode(x)
        assert code.shape == (2, ae.code_channels, 4, 5)
        assert ae.code_channels == 5 + 3 * (64 + 16 + 4)
        bottom, skips = ae.unpack(code)
        k = 2 if variational else 1
        for a, b in zip(skips + [bottom], feats):
            assert torch.equal(a, b[:, : b.shape[1] // k])
        dep = DisentangledDeploy(channels=[4, 8, 8], id_channels=5, blur_channels=1,
                                 variational=variational, skip_channels=3).eval()
        dep.ae.load_state_dict(ae.state_dict())
        dep.focus_code.fill_(0.7)
        ref = ae.decode(code, torch.full((2, 1), 0.7))
        assert torch.allclose(dep(x), ref, atol=1e-6)
        assert float((ae.decode(code, torch.full((2, 1), -2.0)) - ref).abs().max()) > 1e-3
        for p in ae.encoder.blur_head.parameters():
            p.add_(1.0)
        assert torch.equal(ae.encode(x)[0], code)


# ------------------------------------------------------------------------------ losses
def test_code_distance_rms_and_unit():
    from sharpstack.methods.disentangled import code_distance

    a = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[2.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(code_distance(a, b), torch.tensor([1.0, 0.5]), atol=1e-5)
    # unit: same direction -> 0 whatever the lengths
    assert float(code_distance(a[1:], b[1:], "unit")) == pytest.approx(0.0, abs=1e-6)
    # a 1-D code keeps its distance with rms
    assert float(code_distance(torch.tensor([[0.2]]), torch.tensor([[0.9]]))) == \
        pytest.approx(0.7, abs=1e-5)


def test_beta_schedule_rises_exponentially_to_one():
    from sharpstack.methods.disentangled import beta_schedule

    vals = [beta_schedule(t, full=0.1, rate=25.0) for t in (0.0, 0.05, 0.1, 0.5)]
    assert vals[0] == pytest.approx(np.exp(-2.5))
    assert vals[1] == pytest.approx(np.exp(-1.25))
    assert vals[2] == vals[3] == 1.0


def test_product_of_gaussians_matches_closed_form():
    from sharpstack.methods.disentangled import product_of_gaussians

    mu = torch.tensor([[1.0, 3.0]]).T[None]  # (1 group, 2 members, 1)
    var = torch.tensor([[1.0, 4.0]]).T[None]
    m, v = product_of_gaussians(mu, var.log(), dim=1)
    # precisions 1 and 0.25 add to 1.25; mean (1*1 + 3*0.25) / 1.25 = 1.4
    assert float(v) == pytest.approx(0.8)
    assert float(m) == pytest.approx(1.4)


def test_mlvae_score_known_answers():
    from sharpstack.metrics import mlvae_score

    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(5), 8)
    centres = rng.normal(size=(5, 40))
    idc = centres[ids] + 0.1 * rng.normal(size=(40, 40))
    level = np.tile(np.arange(8.0), 5)[:, None]
    good = mlvae_score(idc, level, ids)
    assert good["identity_accuracy"] == 1.0
    assert good["blur_accuracy"] <= 0.25 and good["score"] >= 0.75
    leaky = mlvae_score(idc, idc[:, :10], ids)  # the blur code carries the identity
    assert leaky["blur_accuracy"] == 1.0 and leaky["score"] == 0.0
    with pytest.raises(InputError, match="at least 2 identities"):
        mlvae_score(idc[:8], level[:8], ids[:8])


# ------------------------------------------------------------------------------ data
def test_synthetic_series_has_its_focus_and_blur_grows(tiny_series):
    from sharpstack.metrics import psnr_normalized

    series, gt = tiny_series
    assert series.images.shape == (6, 5, 48, 48) and gt.shape == (6, 48, 48)
    assert list(series.focus) == [2] * 6
    stack = series.images[0]
    scores = [psnr_normalized(gt[0], stack[k]) for k in range(5)]
    assert int(np.argmax(scores)) == 2  # sharpest at dz = 0
    assert scores[0] < scores[1] < scores[2] > scores[3] > scores[4]


def test_defocus_public_names():
    from sharpstack.methods.disentangled import defocus

    assert set(defocus.__all__) == {"defocus_psf_2d", "defocus_series"}
    for name in defocus.__all__:
        assert callable(getattr(defocus, name)), name


def test_group_dataset_pairs(tiny_series):
    from sharpstack.methods.disentangled import GroupDataset

    series, _ = tiny_series
    # all planes of an identity equal: a same-identity pair must then be pixel-identical,
    # which checks that the crop and the flips/rotations are shared
    flat = np.repeat(series.images[:, 2:3], 5, axis=1)
    ds = GroupDataset(flat, series.focus, [0, 1, 2, 3], patch_size=32, group_size=3,
                      p_focus=1.0, length=20, seed=3)
    for k in range(10):
        imgs, dz, ident = ds[k]
        assert imgs.shape == (4, 1, 32, 32)
        assert torch.equal(imgs[0], imgs[1]) and torch.equal(imgs[0], imgs[2])
        assert len(set(dz[:3].tolist())) == 3  # distinct planes
        assert dz[3] == dz[0] and ident[3] != ident[0]  # same defocus, other identity
        assert int(ident[0]) in (0, 1, 2, 3) and int(ident[3]) in (0, 1, 2, 3)
        if dz[0] != 0:
            assert dz[1] == 0  # p_focus = 1: the partner is in focus
    a, b = ds[5], ds[5]
    assert torch.equal(a[0], b[0])  # seeded per item
    val = GroupDataset(series.images, series.focus, [4], patch_size=32, length=8,
                       force_focus=True, need_other=False)
    for k in range(8):
        _, dz, _ = val[k]
        assert dz[0] != 0 and dz[1] == 0


def test_split_identities_is_seeded_and_disjoint():
    from sharpstack.methods.disentangled import split_identities

    s = split_identities(20, val_fraction=0.1, test_fraction=0.2, seed=4)
    assert s == split_identities(20, val_fraction=0.1, test_fraction=0.2, seed=4)
    assert len(s["test"]) == 4 and len(s["val"]) == 2 and len(s["train"]) == 14
    assert sorted(s["test"] + s["val"] + s["train"]) == list(range(20))
    with pytest.raises(InputError, match="too few"):
        split_identities(3, val_fraction=0.3, test_fraction=0.3)


def _series_files(tmp_path, stacks):
    from sharpstack.io import as_dataarray, write_tiff

    folder = tmp_path / "series"
    folder.mkdir()
    for i, s in enumerate(stacks):
        write_tiff(folder / f"field_{i:02d}.tif", as_dataarray(s, "ZYX"))
    return folder


def test_read_defocus_series_finds_the_focus(tiny_series, tmp_path):
    from sharpstack.methods.disentangled import read_defocus_series

    series, _ = tiny_series
    stacks = [np.clip(series.images[i] * 1000, 0, 65535).astype(np.uint16) for i in range(3)]
    folder = _series_files(tmp_path, stacks)
    found = read_defocus_series(folder)
    assert found.names == ["field_00.tif", "field_01.tif", "field_02.tif"]
    assert list(found.focus) == [2, 2, 2]
    given = read_defocus_series(folder, focus=1)
    assert list(given.focus) == [1, 1, 1]
    np.testing.assert_array_equal(given.images[1], stacks[1].astype(np.float32))


def test_series_without_an_in_focus_plane_is_an_error(tiny_series, tmp_path):
    from sharpstack.methods.disentangled import find_focus, series_from_stacks

    series, _ = tiny_series
    one_side = series.images[0, 2:]  # focus, then ever more blurred: sharpest is the first
    with pytest.raises(InputError, match="no in-focus plane inside the series.*first"):
        find_focus(one_side, name="one_side.tif")
    same = np.repeat(series.images[0, :1], 4, axis=0)  # every plane equally sharp
    with pytest.raises(InputError, match="no in-focus plane: no plane is sharper"):
        series_from_stacks([same], names=["flat.tif"])
    with pytest.raises(InputError, match=r"in-focus plane 9 of .* outside its 5 planes"):
        series_from_stacks([series.images[0]], focus=8)


def test_images_of_unequal_sizes_are_an_error(tiny_series, tmp_path):
    from sharpstack.methods.disentangled import read_defocus_series, series_from_stacks

    series, _ = tiny_series
    a, b = series.images[0], series.images[1, :, :40, :]
    with pytest.raises(InputError, match=r"unequal sizes: .*\(5, 48, 48\).*\(5, 40, 48\)"):
        series_from_stacks([a, b], names=["a.tif", "b.tif"], focus=2)
    folder = _series_files(tmp_path, [a, b])
    with pytest.raises(InputError, match="unequal sizes: field_00.tif"):
        read_defocus_series(folder, focus=2)
    with pytest.raises(InputError, match="single 2D image"):
        series_from_stacks([a[0]])


def test_config_is_bounded_and_rejects_unknown_keys():
    from pydantic import ValidationError

    from sharpstack.methods.disentangled import DisentangledConfig

    assert DisentangledConfig(variant="manifold").code_blur_channels == 64
    assert DisentangledConfig().code_blur_channels == 1
    for bad in ({"variant": "manifold1d", "blur_channels": 4}, {"patch_size": 60},
                {"margin": -1}, {"unknown_key": 1}, {"recon_loss": "vgg"}):
        with pytest.raises(ValidationError):
            DisentangledConfig(**bad)
    for name, f in DisentangledConfig.model_fields.items():
        assert f.description, name


# ------------------------------------------------------------------------------ VGG
def _write_vgg(path, *, first_in: int = 3, layers: int = 4):
    from sharpstack.methods.disentangled import VGG16Features

    net = VGG16Features(layers - 1)
    state = net.features.state_dict()
    if first_in != 3:
        state["0.weight"] = torch.rand(64, first_in, 3, 3)
    torch.save({f"features.{k}": v for k, v in state.items()}, path)


def test_vgg_weights_file_is_loaded_and_checked(tmp_path):
    from sharpstack.methods.disentangled import VGGPerceptualLoss, load_vgg16_features

    good = tmp_path / "vgg_small.pt"
    _write_vgg(good)  # layers 0..3 only: enough for relu1_2
    feats = load_vgg16_features(good, [3])
    loss = VGGPerceptualLoss(feats, [3])
    x = torch.rand(2, 1, 32, 32)
    assert float(loss(x, x)) == 0.0 and float(loss(x, x.flip(-1))) > 0
    wrong = tmp_path / "vgg_gray.pt"
    _write_vgg(wrong, first_in=1)
    with pytest.raises(InputError, match=r"'0.weight' has shape \(64, 1, 3, 3\).*\(64, 3, 3, 3\)"):
        load_vgg16_features(wrong, [3])
    with pytest.raises(InputError, match="lacks '5.weight'"):
        load_vgg16_features(good, [8])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable PyTorch state dict"):
        load_vgg16_features(junk, [3])


def test_training_with_the_vgg_loss_runs(tiny_series, tmp_path):
    from sharpstack.methods.disentangled import DisentangledConfig, train_disentangled

    series, _ = tiny_series
    w = tmp_path / "vgg.pt"
    _write_vgg(w)
    cfg = DisentangledConfig(variant="manifold", recon_loss="vgg", vgg_weights=str(w),
                             vgg_layers=[3], **{**TINY, "epochs": 1, "steps_per_epoch": 2})
    model = train_disentangled(series, cfg)
    assert np.isfinite(model.result.history[-1]["train_loss"])
    _write_vgg(w, first_in=1)
    with pytest.raises(InputError, match="has shape"):
        train_disentangled(series, cfg)


def test_training_on_already_normalised_images(tiny_series):
    """``normalized=True`` trains on the images as given (the pairs bench's tiles cut from a
    region normalised as a whole): on pre-normalised images it matches the default per-image
    normalisation, on raw ones it does not renormalise them."""
    from sharpstack.methods.disentangled import DefocusSeries, DisentangledConfig, \
        train_disentangled
    from sharpstack.methods.disentangled.data import normalise_images
    from sharpstack.normalize import PercentileNormalizer

    series, _ = tiny_series
    raw = DefocusSeries(series.images * 50.0 + 200.0, series.focus, series.names)
    pre = DefocusSeries(normalise_images(raw.images, PercentileNormalizer()), raw.focus,
                        raw.names)
    cfg = DisentangledConfig(variant="manifold1d", **{**TINY, "epochs": 1,
                                                      "steps_per_epoch": 2})
    base = train_disentangled(raw, cfg).focus_code
    same = train_disentangled(pre, cfg, normalized=True).focus_code
    as_given = train_disentangled(raw, cfg, normalized=True).focus_code
    assert np.allclose(same, base, atol=1e-3)
    assert not np.allclose(as_given, base, atol=1e-2)


# ------------------------------------------------------------------------------ training
def test_tiny_training_records_split_and_resumes(tiny_model, tiny_series):
    import json

    from sharpstack.methods.disentangled import DisentangledConfig, train_disentangled

    model, run = tiny_model
    series, _ = tiny_series
    log = json.loads((run / "history.json").read_text())
    assert log["config"]["split"] == model.split
    assert sorted(sum(model.split.values(), [])) == sorted(series.names)
    assert len(model.split["val"]) == 1 and not model.split["test"]
    assert model.focus_code.shape == (1,)
    # the default recipe trains the deploy path alone (supervised = 1): no thesis losses
    assert {"train_deblur", "val_deblur"} <= set(log["history"][-1])
    assert "train_rec" not in log["history"][-1]
    more = DisentangledConfig(variant="manifold1d", **{**TINY, "epochs": 3})
    resumed = train_disentangled(series, more, out_dir=run, resume=True)
    assert [h["epoch"] for h in resumed.result.history] == [1, 2, 3]
    other = DisentangledConfig(variant="manifold1d", **{**TINY, "epochs": 3, "margin": 0.3})
    with pytest.raises(InputError, match="margin"):
        train_disentangled(series, other, out_dir=run, resume=True)


def test_training_lowers_the_losses(tiny_series):
    from sharpstack.methods.disentangled import DisentangledConfig, train_disentangled

    series, _ = tiny_series
    for variant in ("manifold", "mlvae"):
        cfg = DisentangledConfig(variant=variant, supervised=0.0,
                                 **{**TINY, "epochs": 3, "steps_per_epoch": 8,
                                    "lr": 3e-3, "group_size": 3})
        hist = train_disentangled(series, cfg).result.history
        assert hist[-1]["train_rec"] < hist[0]["train_rec"], variant
        if variant == "manifold":
            assert {"train_cross", "train_cont", "train_cons"} <= set(hist[-1])
        if variant == "mlvae":
            assert "train_kl" in hist[-1]


def test_training_without_batch_norm_builds_and_deploys_that_network(tiny_series):
    """``batch_norm=False`` trains a network with biased convolutions and no batch norm; the
    deploy module (rebuilt from the recorded kwargs, as a package is) computes what the
    trained network computes, and the card names the normalisation."""
    from sharpstack.methods.disentangled import DisentangledConfig, train_disentangled
    from sharpstack.methods.disentangled.package import card_fields

    series, _ = tiny_series
    cfg = DisentangledConfig(variant="manifold1d", batch_norm=False, self_ensemble=False,
                             **{**TINY, "epochs": 1, "steps_per_epoch": 3})
    assert cfg.arch_kwargs()["batch_norm"] is False
    model = train_disentangled(series, cfg)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.net.modules())
    dep = model.deploy()
    x = torch.from_numpy(np.ascontiguousarray(series.images[0, :2, None, :48, :48]))
    with torch.no_grad():
        idc, _ = model.net.encode(x)
        ref = model.net.decode(idc, torch.as_tensor(model.focus_code)[None].expand(2, -1),
                               base=x)
        assert torch.allclose(dep(x), ref, atol=1e-5)
    fields = card_fields(model, halo=8, min_size=16, training_data="", test_input_text="")
    assert "no batch norm" in fields["norm_text"]
    assert "batch_norm" in fields["arch_kwargs"]


def test_deblur_equals_the_deploy_module_and_handles_stacks(tiny_model, tiny_series):
    from sharpstack.methods.disentangled import deblur

    model, _ = tiny_model
    series, _ = tiny_series
    img = series.images[0, 0]
    out = deblur(model, img)
    assert out.shape == img.shape and out.dtype == np.float32
    x = model.normalizer.before(img)
    with torch.no_grad():
        ref = model.deploy()(torch.from_numpy(x[None, None]))[0, 0].numpy()
    np.testing.assert_allclose(out, ref, atol=1e-6)
    stack = deblur(model, series.images[1], axes="ZYX")
    assert stack.shape == series.images[1].shape
    odd = deblur(model, img[:45, :41])  # padded to a multiple of 4 and cropped
    assert odd.shape == (45, 41)
    with pytest.raises(InputError):
        deblur(model, img, axes="ZYX")


# ------------------------------------------------------------------------------ benchmark
def test_benchmark_machinery_on_tiny_data(tiny_series, tmp_path):
    from sharpstack.methods.disentangled.bench import run_disentangled_bench
    from sharpstack.io import as_dataarray, write_tiff
    from sharpstack.methods.disentangled import synthetic_series

    real = tmp_path / "real"  # stands in for the real z-scans: 10 fields of 5 planes
    real.mkdir()
    s, _ = synthetic_series(10, 48, dz_um=(-2.0, -1.0, 0.0, 1.0, 2.0), seed=5)
    for i in range(10):
        write_tiff(real / f"s{i}.tif", as_dataarray(s.images[i], "ZYX"))
    res = run_disentangled_bench(
        tmp_path / "out", datasets=("synthetic", "real"), models=("mlvae", "manifold1d"),
        epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32, channels=(4, 8),
        id_channels=4, n_synthetic=10, synthetic_size=64, jobs=1, data_dir=real,
        real_focus_plane=3, rl_iterations=(1, 2), n_train_scored=2)
    for f in ("tables.md", "per_dz.csv", "results.json", "deblurring_synthetic.png",
              "deblurring_real.png", "quality_vs_dz.png"):
        assert (tmp_path / "out" / f).exists(), f
    text = (tmp_path / "out" / "tables.md").read_text()
    for needle in ("Table 5.3", "Table 5.2", "per |dz|", "Done-when checks", "ML-VAE",
                   "1D manifold-based", "Richardson-Lucy"):
        assert needle in text, needle
    syn = res["datasets"]["synthetic"]
    assert len(syn["split"]["test"]) == 2 and not set(syn["split"]["test"]) & set(
        syn["split"]["train"])
    # the blurry input's quality falls with the defocus (a known answer of the data)
    per = syn["baselines"]["blurry"]["per_dz"]
    assert per["1"][1] > per["6"][1] and per["-1"][1] > per["-6"][1]
    assert res["datasets"]["real"]["rl_sigmas"][2] == 0.0  # the in-focus plane
    assert {c["check"] for c in res["checks"]} >= {"ML-VAE score: 1-D manifold > ML-VAE"}
    # the linear filters, fitted on the training fields, deblur the test fields of the real
    # stand-in (one blur per plane), the per-plane ones at least as well as one for all
    rb = res["datasets"]["real"]["baselines"]
    for d in ("2", "-2"):
        assert rb["linear_plane"]["per_dz"][d][1] > rb["blurry"]["per_dz"][d][1] + 0.5
    assert (rb["linear_plane"]["deblurring_test"][1]
            >= rb["linear"]["deblurring_test"][1] - 0.1)
    assert "Linear filter per plane" in text and "linear filter per plane |" in text


def test_paired_benchmark_on_a_tiny_series(tmp_path):
    from sharpstack.io import as_dataarray, write_tiff
    from sharpstack.methods.disentangled import synthetic_series
    from sharpstack.methods.disentangled.pairs import run_pairs_bench

    s, _ = synthetic_series(1, 160, dz_um=(-1.0, -0.5, 0.0, 0.5, 1.0), seed=2)
    path = tmp_path / "pairs.tif"
    write_tiff(path, as_dataarray(s.images[0], "ZYX"))
    res = run_pairs_bench(tmp_path / "out", data=path, focus_plane=3, test_rows=48, gap=8,
                          tile=32, models=("manifold1d", "manifold1d_plane"),
                          rl_iterations=(1, 2),
                          config={**TINY, "epochs": 1})
    text = (tmp_path / "out" / "pairs.md").read_text()
    assert "blurry input" in text and "RL (fitted Gaussian PSF" in text and "ML-VAE score" in text
    assert "linear filter per plane" in text
    assert (tmp_path / "out" / "pairs_dz-2.png").exists()
    # the known answer of the data: the input is worse two planes away than one
    assert res["baselines"]["blurry"][1][0] > res["baselines"]["blurry"][2][0]
    assert res["rl_sigmas"][2] == 0.0
    # the per-plane filters, learned on the training rows, deblur the scored rows
    for d in (1, 2):
        assert res["baselines"]["linear_plane"][d][0] > res["baselines"]["blurry"][d][0] + 1
    assert set(res["baselines"]["linear_shared"]) == {1, 2}
    # the plane-calibrated model deblurs the filtered planes: after one tiny epoch its residual
    # network is still near the identity, so it scores like the filters, far above its input
    cal = res["models"]["manifold1d_plane"]["per_dz"]
    assert cal[2][0] > res["baselines"]["blurry"][2][0] + 1
    assert cal[2][0] > res["models"]["manifold1d"]["per_dz"][2][0]
    assert set(res["models"]["manifold1d"]["per_dz"]) == {1, 2}
    assert "normalised per plane over the whole training region" in res["split"]
    with pytest.raises(InputError, match="train_norm"):
        run_pairs_bench(tmp_path / "o3", data=path, focus_plane=3, train_norm="sample")
    with pytest.raises(InputError, match="normalised as a whole"):
        run_pairs_bench(tmp_path / "o4", data=path, focus_plane=3, train_norm="tile",
                        models=("manifold1d_plane",))
    with pytest.raises(InputError, match="unknown model"):
        run_pairs_bench(tmp_path / "o2", data=path, focus_plane=3, models=("nope",))


def test_gain_warning_names_both_numbers():
    from sharpstack.methods.disentangled.evaluate import gain_warning

    worse = {"psnr_input_db": 16.5, "psnr_deblurred_db": 15.0, "ssim_input": 0.4,
             "ssim_deblurred": 0.45}
    text = gain_warning(worse, "the demo's sample")
    assert "does not beat" in text and "15.00 dB against 16.50 dB" in text
    assert gain_warning({**worse, "psnr_deblurred_db": 17.0}, "x") is None
    assert gain_warning(None, "x") is None


# ------------------------------------------------------------------------------ demo, recipe
def _min_lateral_size(settings: dict) -> int:
    from sharpstack.methods.disentangled.package import disentangled_axes
    from sharpstack.methods.disentangled import (DisentangledConfig, DisentangledModel)
    from sharpstack.methods.disentangled.disentangled_arch import DisentangledAE
    from sharpstack.normalize import PercentileNormalizer

    fields = set(DisentangledConfig.model_fields)
    cfg = DisentangledConfig(**{k: v for k, v in settings.items() if k in fields})
    model = DisentangledModel(net=DisentangledAE(**cfg.arch_kwargs()), config=cfg,
                              normalizer=PercentileNormalizer(), focus_code=np.zeros(1),
                              split={})
    return disentangled_axes(model)[0].min


def test_demo_sample_is_large_enough_for_its_package():
    # the demo's sample (one synthetic field) becomes the package's test input: a field
    # smaller than the package's minimum size made `sharpstack demo disentangled` fail
    from sharpstack.methods.disentangled import Disentangled

    demo = Disentangled.demo
    assert demo.synth["size"] >= _min_lateral_size(demo.settings)
    assert demo.settings["patch_size"] <= demo.synth["size"]


def test_shipped_recipes_train_what_the_card_describes():
    from pathlib import Path

    from sharpstack.methods.disentangled import DisentangledSynth
    from sharpstack.zoo import load_recipe

    root = Path(__file__).resolve().parents[1]
    recipes = sorted((root / "zoo").glob("disentangled-*.yaml"))
    assert recipes
    for p in recipes:
        r = load_recipe(p)
        assert r.method == "disentangled"
        assert (root / "model_cards" / f"{r.id}.md").is_file(), r.id
        if r.data.synth is not None:
            syn = DisentangledSynth(**r.data.synth)
            assert syn.size >= _min_lateral_size(r.training)
            assert r.training["patch_size"] <= syn.size


def test_group_dataset_appends_the_in_focus_crop_of_the_first_image():
    """``with_focus``: the last image of a group is the in-focus plane of the first image's
    field, at the same crop and orientation (plane q of field i is a field-wide pattern plus
    1000 q, so the difference of the two images is the constant 1000 (f - first))."""
    from sharpstack.methods.disentangled import GroupDataset

    rng = np.random.default_rng(0)
    base = rng.random((4, 1, 40, 40)).astype(np.float32)
    images = base + 1000.0 * np.arange(5, dtype=np.float32)[None, :, None, None]
    focus = np.array([2, 1, 3, 2])
    ds = GroupDataset(images, focus, [0, 1, 2, 3], patch_size=24, p_focus=0.0, length=12,
                      seed=5, with_focus=True)
    plain = GroupDataset(images, focus, [0, 1, 2, 3], patch_size=24, p_focus=0.0, length=12,
                         seed=5)
    for k in range(12):
        imgs, dz, ident = ds[k]
        assert imgs.shape == (4, 1, 24, 24)
        assert int(dz[-1]) == 0 and int(ident[-1]) == int(ident[0])
        diff = (imgs[-1] - imgs[0]).numpy()
        np.testing.assert_allclose(diff, -1000.0 * float(dz[0]), atol=1e-2)
        assert torch.equal(imgs[:3], plain[k][0])  # the groups themselves are unchanged


def test_supervised_phase_trains_the_deploy_path_alone_at_the_end():
    """With ``supervised`` 0.5 of 4 steps, steps 1-2 are the thesis's (reconstruction logged),
    steps 3-4 train only D(I_a, B_f) against the in-focus image f (the last of the group):
    on one fixed batch that L1 falls, and the supervised step changes the decoder."""
    task, opts, net = _tiny_manifold_task(steps_per_epoch=4, supervised=0.5, lr=3e-3)
    g = torch.Generator().manual_seed(1)
    sharp = torch.rand(2, 1, 1, 16, 16, generator=g)
    blurry = torch.nn.functional.avg_pool2d(sharp[:, 0], 3, 1, 1)[:, None]
    imgs = torch.cat([blurry, sharp, blurry.flip(0), sharp], dim=1)
    dz = torch.tensor([[2, 0, 2, 0], [1, 0, 1, 0]])
    logs = [task.train_step((imgs, dz), opts) for _ in range(2)]
    assert all("rec" in lg for lg in logs)
    before = net.decoder.blocks[-1][-1].weight.detach().clone()
    ft = [task.train_step((imgs, dz), opts) for _ in range(2)]
    assert all("rec" not in lg and "deblur" in lg for lg in ft)
    assert not torch.equal(before, net.decoder.blocks[-1][-1].weight)
    for _ in range(30):
        ft.append(task._supervised_step((imgs, dz), opts))
    assert ft[-1]["deblur"] < 0.97 * ft[0]["deblur"]
