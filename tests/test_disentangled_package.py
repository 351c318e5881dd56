"""Disentangled deblurring through the method interface: CLI synth/train/export, the package
(bioimageio test for three weight formats, sharpstack predict == in-process deblurring on a 2D
image and plane by plane on a stack, tiled == untiled, sharpstack check for QuPath,
deepImageJ and ilastik), and bad input answered with exit code 2, one message, no traceback,
no partial output."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from sharpstack.cli import app
from sharpstack.io import as_dataarray, read_stack, write_tiff

from ._cli import ok as _ok, clean_failure as _clean_failure
from ._windows import assert_windows_agree
from .conftest import needs_shared_data

runner = CliRunner()

# a tiny network (two poolings, 4-8 channels): receptive radius 21, halo 24, minimum size 52
TINY_FLAGS = ["--focus-plane", "3", "--channels", "4,8", "--id-channels", "8",
              "--patch-size", "32", "--epochs", "2", "--steps-per-epoch", "3",
              "--batch-size", "4", "--threads", "1"]





@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("dis_data") / "data"
    _ok(runner.invoke(app, ["synth", "disentangled", str(out), "--identities", "6",
                            "--size", "64", "--dz-max", "1", "--dz-step", "0.5",
                            "--sample-dz", "1.0", "--seed", "1"]))
    return out


@pytest.fixture(scope="module")
def run(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("dis_cli") / "run"
    _ok(runner.invoke(app, ["train", "disentangled", str(synth / "series"), str(out)]
                      + TINY_FLAGS))
    return out


@pytest.fixture(scope="module")
def package(run, synth, tmp_path_factory):
    pkg = tmp_path_factory.mktemp("dis_pkg") / "deblur.zip"
    res = _ok(runner.invoke(app, ["export", str(run), str(synth / "sample.tif"), str(pkg)]))
    assert "tested" in res.output
    return pkg


def _rdf_and(pkg: Path, member: str | None = None):
    with zipfile.ZipFile(pkg) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        data = z.read(member) if member else None
        names = z.namelist()
    return rdf, data, names


def test_run_folder_records_the_split_and_settings(run):
    info = json.loads((run / "run.json").read_text())
    assert info["method"] == "disentangled" and info["status"] == "trained"
    assert info["settings"]["channels"] == [4, 8] and info["settings"]["focus_plane"] == 3
    rec = info["record"]
    assert sorted(rec["split"]["train"] + rec["split"]["val"]) == \
        [f"{i:03d}.tif" for i in range(6)]
    assert rec["focus"] == [2] * 6 and rec["focus_found"] is False
    tensors = torch.load(run / "model.pt", weights_only=True)
    assert tensors["focus"]["code"].shape == (1,)


def test_package_passes_bioimageio_test_for_three_formats(package):
    from sharpstack.export.package import test_package

    ok, report = test_package(package, ("torchscript", "onnx", "pytorch_state_dict"))
    assert ok, report


def test_package_is_2d_with_halo_and_the_sample_as_test_input(package, run, synth):
    from sharpstack.methods.disentangled.package import test_input_from
    from sharpstack.workflows import load_run

    rdf, raw, names = _rdf_and(package, "test_input.npy")
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    model = load_run(run).trained.model
    for a, o in zip(inp["axes"][2:], out["axes"][2:]):
        assert a["size"]["step"] == 4 and a["size"]["min"] % 4 == 0
        assert o["size"]["offset"] == 0 and o["halo"] >= model.receptive_radius()
    pre = [p for p in inp["preprocessing"] if p["id"] != "ensure_dtype"]
    assert [p["id"] for p in pre] == ["scale_range"]
    assert pre[0]["kwargs"]["min_percentile"] == 1.0 and pre[0]["kwargs"]["max_percentile"] == 99.8
    assert set(rdf["weights"]) == {"torchscript", "onnx", "pytorch_state_dict"}
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] == \
        "DisentangledDeploy"
    x = np.load(__import__("io").BytesIO(raw))
    sample = np.asarray(read_stack(synth / "sample.tif").values, dtype=np.float32)
    np.testing.assert_array_equal(x[0, 0], test_input_from(model, sample))
    with zipfile.ZipFile(package) as z:
        card = z.read("README.md").decode()
    assert "1-D" in card and "Deviations from the thesis" in card and "QuPath" in card
    assert "| qupath | yes |" in card and "cover0.png" in names


@needs_shared_data
def test_shared_data_never_goes_into_a_package(run, tmp_path):
    from sharpstack.export.package import spec_from_request
    from sharpstack.methods.disentangled.package import package_request, synthetic_test_input
    from sharpstack.methods.disentangled import shared_zscans_dir
    from sharpstack.workflows import load_run

    zscans = shared_zscans_dir()
    sample = sorted(zscans.glob("*.tif"))[0]
    trained = load_run(run).trained
    spec = spec_from_request(package_request(trained, sample, "deblur2d", workdir=tmp_path),
                             claims=("bioimageio",), cite=[{"text": "t", "doi": "10.1/x"}])
    np.testing.assert_array_equal(spec.test_input, synthetic_test_input(trained.model)[0])
    assert "synthetic" in spec.documentation and "not the training data" in spec.documentation


def test_check_passes_for_qupath_deepimagej_and_ilastik(package):
    _ok(runner.invoke(app, ["check", str(package), "--for", "qupath", "--for", "deepimagej",
                            "--for", "ilastik"]))
    from sharpstack.export.consumers import check_package

    assert check_package(package, ["bioimageio", "deepimagej", "ilastik", "qupath"]).ok()


def test_predict_reproduces_the_in_process_deblurring(package, run, synth, tmp_path):
    from sharpstack.methods.disentangled import deblur
    from sharpstack.workflows import load_run

    model = load_run(run).trained.model
    img = np.asarray(read_stack(synth / "sample.tif").values)
    out = tmp_path / "out.tif"
    _ok(runner.invoke(app, ["predict", str(package), str(synth / "sample.tif"), str(out)]))
    np.testing.assert_allclose(read_stack(out).values, deblur(model, img), atol=1e-4)
    # a z-stack runs plane by plane (percentiles of the whole stack, as predict documents)
    stack = np.asarray(read_stack(synth / "sample_series.tif").values)
    out3 = tmp_path / "out3.tif"
    _ok(runner.invoke(app, ["predict", str(package), str(synth / "sample_series.tif"),
                            str(out3)]))
    got = read_stack(out3)
    assert tuple(got.dims) == ("z", "y", "x")
    np.testing.assert_allclose(got.values, deblur(model, stack, axes="ZYX"), atol=1e-4)


def test_tiled_equals_untiled(package, synth, tmp_path):
    img = np.asarray(read_stack(synth / "sample.tif").values)
    big = np.concatenate([np.concatenate([img, img[:, ::-1]], axis=1),
                          np.concatenate([img[::-1], img[::-1, ::-1]], axis=1)], axis=0)
    src = tmp_path / "big.tif"  # 128 x 128: several 64 px tiles with a 24 px halo
    write_tiff(src, as_dataarray(big, "YX"))
    untiled, tiled = tmp_path / "untiled.tif", tmp_path / "tiled.tif"
    one = _ok(runner.invoke(app, ["predict", str(package), str(src), str(untiled)]))
    res = _ok(runner.invoke(app, ["predict", str(package), str(src), str(tiled),
                                  "--tile", "64"]))
    assert "1/1" in one.output and "1/1" not in res.output  # several windows when tiled
    a, b = read_stack(untiled).values, read_stack(tiled).values
    assert a.shape == big.shape
    np.testing.assert_allclose(b, a, atol=1e-4)


def test_bad_inputs_get_one_message_and_exit_code_2(synth, tmp_path):
    series = [np.asarray(read_stack(p).values) for p in sorted((synth / "series").glob("*.tif"))]
    out = tmp_path / "run_bad"

    def train(folder, *extra):
        return runner.invoke(app, ["train", "disentangled", str(folder), str(out)]
                             + TINY_FLAGS + list(extra))

    unequal = tmp_path / "unequal"
    unequal.mkdir()
    write_tiff(unequal / "a.tif", as_dataarray(series[0], "ZYX"))
    write_tiff(unequal / "b.tif", as_dataarray(series[1][:, :56, :], "ZYX"))
    _clean_failure(train(unequal), "unequal sizes", "a.tif", "b.tif")
    assert not out.exists()

    flat = tmp_path / "flat"  # every plane the same image: no in-focus plane to find
    flat.mkdir()
    for i in range(3):
        write_tiff(flat / f"{i}.tif", as_dataarray(np.repeat(series[i][:1], 5, axis=0), "ZYX"))
    flags = [f for f in TINY_FLAGS]
    k = flags.index("--focus-plane")
    del flags[k:k + 2]
    _clean_failure(runner.invoke(app, ["train", "disentangled", str(flat), str(out)] + flags),
                   "no in-focus plane")
    assert not out.exists()
    _clean_failure(train(synth / "series", "--focus-plane", "9"), "outside its 5 planes")
    assert not out.exists()

    bad_vgg = tmp_path / "vgg.pt"
    torch.save({"0.weight": torch.zeros(64, 1, 3, 3), "0.bias": torch.zeros(64),
                "2.weight": torch.zeros(64, 64, 3, 3), "2.bias": torch.zeros(64)}, bad_vgg)
    _clean_failure(train(synth / "series", "--recon-loss", "vgg", "--vgg-weights",
                         str(bad_vgg)), "has shape (64, 1, 3, 3)")
    assert not (out / "model.pt").exists()

    plane = tmp_path / "plane"
    plane.mkdir()
    write_tiff(plane / "p.tif", as_dataarray(series[0][2], "YX"))
    _clean_failure(train(plane), "single 2D image")
    _clean_failure(train(synth / "series", "--variant", "manifold1d", "--blur-channels", "4"),
                   "blur_channels")
    assert not (out / "model.pt").exists()


def test_cli_resume_refuses_other_settings(synth, tmp_path):
    out = tmp_path / "run"
    first = list(TINY_FLAGS)
    first[first.index("--epochs") + 1] = "1"
    _ok(runner.invoke(app, ["train", "disentangled", str(synth / "series"), str(out)] + first))
    res = _ok(runner.invoke(app, ["train", "disentangled", str(synth / "series"), str(out),
                                  "--resume"] + TINY_FLAGS))
    assert "trained 2 epochs" in res.output
    _clean_failure(runner.invoke(app, ["train", "disentangled", str(synth / "series"), str(out),
                                       "--resume", "--margin", "0.3"] + TINY_FLAGS),
                   "other settings")


def test_held_out_quality_for_the_model_card(run, synth):
    from sharpstack.methods.disentangled.bench import held_out_quality
    from sharpstack.methods.disentangled import deblur, read_defocus_series
    from sharpstack.metrics import psnr_normalized, ssim_normalized
    from sharpstack.workflows import load_run

    q = held_out_quality(run, synth / "series", dz_um=[-1.0, -0.5, 0.0, 0.5, 1.0],
                         rl_iterations=(1, 2))
    model = load_run(run).model
    series = read_defocus_series(synth / "series", focus=2)
    held = [series.names.index(n) for n in model.split["val"]]  # no test split: validation
    blur_p, deb_s = [], []
    for i in held:
        for k in (0, 1, 3, 4):
            blur_p.append(psnr_normalized(series.images[i, 2], series.images[i, k]))
            deb_s.append(ssim_normalized(series.images[i, 2], deblur(model,
                                                                     series.images[i, k])))
    assert q["PSNR (dB), all out-of-focus planes: blurry input"] == pytest.approx(
        np.mean(blur_p), abs=1e-6)
    assert q["SSIM, all out-of-focus planes: this model"] == pytest.approx(np.mean(deb_s),
                                                                           abs=1e-6)
    assert "SSIM, all out-of-focus planes: Richardson-Lucy (true PSF, oracle iterations)" in q
    rows = [k for k in q if k.startswith("|dz|")]
    assert [r.split(":")[0] for r in rows] == ["|dz| 0.5 um", "|dz| 1 um"]
    assert f"{len(held)} held-out fields" in q["evaluated on"]


def test_default_windows_match_one_window_and_the_sample_output(package):
    """Default windows on a stack larger than one window along every tiled axis (lengths
    not multiples of the step) == one window; the sample input reproduces the sample output."""
    shapes = assert_windows_agree(package)
    assert min(shapes["large"][-2:]) > 256


def test_a_run_recorded_before_the_residual_decoder_loads_as_it_was_trained(synth, tmp_path):
    """A run folder whose settings predate ``residual`` and ``w_deblur`` was trained with the
    thesis's decoder and losses: reading it back must rebuild that decoder (today's default
    has another layer shape and would add the input to the output)."""
    import json
    import shutil

    import numpy as np

    from sharpstack.methods.disentangled import deblur
    from sharpstack.workflows import load_run

    run = tmp_path / "run"
    _ok(runner.invoke(app, ["train", "disentangled", str(synth / "series"), str(run),
                            "--no-residual", "--w-deblur", "0", "--no-self-ensemble"]
                     + TINY_FLAGS))
    old = tmp_path / "old_run"
    shutil.copytree(run, old)
    info = json.loads((old / "run.json").read_text())
    assert info["settings"]["residual"] is False  # today's runs record it
    for key in ("residual", "w_deblur", "self_ensemble"):
        info["settings"].pop(key)
    (old / "run.json").write_text(json.dumps(info))
    loaded = load_run(old).trained
    assert loaded.settings.residual is False and loaded.settings.w_deblur == 0
    assert loaded.settings.self_ensemble is False
    assert loaded.model.net.residual is False
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    np.testing.assert_array_equal(deblur(loaded.model, img),
                                  deblur(load_run(run).trained.model, img))
