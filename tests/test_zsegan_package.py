"""ZSE-GAN through the method interface: CLI train/export, the package (bioimageio test for
three weight formats, sharpstack predict == in-process restoration, tiled == untiled,
consumer checks), bad input answered with exit code 2, and the benchmark's machinery."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from sharpstack.cli import app
from sharpstack.io import as_dataarray, read_stack, write_tiff

from ._cli import ok as _ok, clean_failure as _clean_failure
from ._windows import assert_windows_agree

runner = CliRunner()

# tiny networks: receptive radius 18 (halo 20), seconds per training on one thread
TINY_FLAGS = ["--crop", "16", "--ngf", "2", "--res-blocks", "1", "--ndf", "4",
              "--d-layers", "3", "--sections", "2", "--epochs", "2", "--steps-per-epoch", "2",
              "--val-count", "1", "--pool", "3", "--threads", "1"]





@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("zsegan_data")
    _ok(runner.invoke(app, ["synth", "zsegan", str(out / "data"), "--source", "synthetic",
                            "--zscans", "3", "--held-apart", "1", "--infocus", "3",
                            "--size", "48", "--seed", "1"]))
    return out / "data"


@pytest.fixture(scope="module")
def run(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("zsegan_cli") / "run"
    _ok(runner.invoke(app, ["train", "zsegan", str(synth / "zscans"), str(synth / "infocus"),
                            str(out)] + TINY_FLAGS))
    return out


@pytest.fixture(scope="module")
def package(run, synth, tmp_path_factory):
    pkg = tmp_path_factory.mktemp("zsegan_pkg") / "zsegan.zip"
    res = _ok(runner.invoke(app, ["export", str(run), str(synth / "sample.tif"), str(pkg)]))
    assert "tested" in res.output
    return pkg


def test_run_folder_records_the_split_and_settings(run):
    info = json.loads((run / "run.json").read_text())
    assert info["method"] == "zsegan" and info["status"] == "trained"
    assert info["settings"]["ngf"] == 2 and info["settings"]["n_planes"] == 29
    assert len(info["record"]["split"]["held_apart"]) == 1
    assert (run / "model.pt").exists() and (run / "last.pt").exists()


def test_package_passes_bioimageio_test_for_three_formats(package):
    from sharpstack.export.package import WEIGHT_FORMATS, test_package

    ok, report = test_package(package)
    assert ok, report
    assert set(WEIGHT_FORMATS) == {"torchscript", "onnx", "pytorch_state_dict"}


def test_package_axes_halo_and_synthetic_test_input(package, run, synth):
    import zipfile

    from sharpstack.methods.zsegan.package import synthetic_test_input
    from sharpstack.workflows import load_run

    with zipfile.ZipFile(package) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        x = np.load(__import__("io").BytesIO(z.read(rdf["inputs"][0]["test_tensor"]["source"])))
        names = z.namelist()
    ax = {a.get("id", a["type"]): a for a in rdf["inputs"][0]["axes"]}
    assert ax["z"]["size"] == {"min": 29, "step": 29} and ax["z"]["concatenable"] is True
    out = {a.get("id", a["type"]): a for a in rdf["outputs"][0]["axes"]}
    trained = load_run(run).trained
    assert out["y"]["halo"] >= trained.model.receptive_radius() and out["y"]["halo"] % 4 == 0
    assert out["z"].get("halo", 0) == 0
    # the test input is the synthetic z-scan, not the (possibly unredistributable) sample
    np.testing.assert_array_equal(x[0, 0], synthetic_test_input(trained.model))
    sample = np.asarray(read_stack(synth / "sample.tif").values)
    assert x.shape[2:] != sample.shape or not np.allclose(x[0, 0], sample)
    assert "cover0.png" in names and rdf["documentation"] == "README.md"


def test_check_passes_for_the_claimed_consumers(package):
    _ok(runner.invoke(app, ["check", str(package), "--for", "deepimagej", "--for", "ilastik"]))
    from sharpstack.export.consumers import check_package

    assert check_package(package, ["bioimageio", "deepimagej", "ilastik"]).ok()


def test_predict_reproduces_the_in_process_restoration(package, run, synth, tmp_path):
    from sharpstack.methods.zsegan import restore
    from sharpstack.workflows import load_run

    model = load_run(run).trained.model
    stack = np.asarray(read_stack(synth / "sample.tif").values)
    big = np.concatenate([stack, stack[:, ::-1]], axis=2)  # 29 x 48 x 96: several tiles
    src = tmp_path / "big.tif"
    write_tiff(src, as_dataarray(big, "ZYX"))
    untiled, tiled = tmp_path / "untiled.tif", tmp_path / "tiled.tif"
    _ok(runner.invoke(app, ["predict", str(package), str(src), str(untiled)]))
    _ok(runner.invoke(app, ["predict", str(package), str(src), str(tiled),
                            "--tile", "29,48,48"]))
    a = np.asarray(read_stack(untiled).values)
    b = np.asarray(read_stack(tiled).values)
    want = restore(model, big)
    assert a.shape == big.shape
    np.testing.assert_allclose(a, want, atol=1e-4)
    np.testing.assert_allclose(b, a, atol=1e-4)


def test_bad_inputs_get_one_message_and_exit_code_2(synth, tmp_path, run, package):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run_bad"
    _clean_failure(runner.invoke(app, ["train", "zsegan", str(empty), str(synth / "infocus"),
                                       str(out)] + TINY_FLAGS), "no z-scans")
    assert not out.exists()
    flat = tmp_path / "flat"
    flat.mkdir()
    write_tiff(flat / "plane.tif", read_stack(synth / "infocus" / "000.tif"))
    _clean_failure(runner.invoke(app, ["train", "zsegan", str(flat), str(synth / "infocus"),
                                       str(out)] + TINY_FLAGS), "2D image")
    assert not out.exists()
    odd = tmp_path / "odd"
    odd.mkdir()
    st = read_stack(synth / "sample.tif")
    write_tiff(odd / "a.tif", st[:27])
    _clean_failure(runner.invoke(app, ["train", "zsegan", str(odd), str(synth / "infocus"),
                                       str(out)] + TINY_FLAGS), "27 focal planes")
    assert not out.exists()
    pkg = tmp_path / "bad.zip"
    _clean_failure(runner.invoke(app, ["export", str(run), str(odd / "a.tif"), str(pkg)]),
                   "27 focal planes")
    assert not pkg.exists()


def test_killed_cli_training_resumes(synth, tmp_path):
    out = tmp_path / "run"
    flags = list(TINY_FLAGS)
    first = list(flags)
    first[first.index("--epochs") + 1] = "1"
    _ok(runner.invoke(app, ["train", "zsegan", str(synth / "zscans"), str(synth / "infocus"),
                            str(out)] + first))
    res = _ok(runner.invoke(app, ["train", "zsegan", str(synth / "zscans"),
                                  str(synth / "infocus"), str(out), "--resume"] + flags))
    assert "trained 2 epochs" in res.output
    other = list(flags)
    other[other.index("--ngf") + 1] = "3"
    _clean_failure(runner.invoke(app, ["train", "zsegan", str(synth / "zscans"),
                                       str(synth / "infocus"), str(out), "--resume"] + other),
                   "other settings")


def test_benchmark_machinery_on_tiny_data(tmp_path):
    from sharpstack.methods.zsegan.bench import run_zsegan_bench
    from sharpstack.methods.zsegan.phantom import zscan

    root = tmp_path / "zse"
    for sub in ("zscans", "infocus"):
        (root / sub).mkdir(parents=True)
    for i in range(4):
        write_tiff(root / "zscans" / f"s{i}.tif", as_dataarray(zscan((29, 32, 32), seed=i),
                                                               "ZYX"))
        write_tiff(root / "infocus" / f"f{i}.tif",
                   as_dataarray(zscan((29, 32, 32), seed=9 + i, return_field=True)[1], "YX"))
    res = run_zsegan_bench(tmp_path / "out", crop=16, ngf=2, n_res=1, ndf=4, sections=1,
                           epochs=1, steps_per_epoch=2, val_count=2, rl_iterations=2,
                           data_dir=root, export=False, extra={"d_layers": 3, "calib_crops": 2,
                                                 "pool_size": 2, "val_monitor": 1})
    for f in ("tables.md", "per_plane.csv", "results.json", "cross_sections.png",
              "gradient_histograms.png", "fm_piqe.png"):
        assert (tmp_path / "out" / f).exists(), f
    text = (tmp_path / "out" / "tables.md").read_text()
    assert "Table 3" in text and "Table 2" in text and "Table 1" in text
    assert len(res["scores"]["zsegan"]["fm"]) == 29
    assert {c["name"] for c in res["criteria"]} >= {"FM max/min over the planes"}
    # the input's defocus makes its FM vary over the planes; the fitted RL widths grow
    assert res["criteria"][0]["input"] != res["criteria"][0]["zsegan"]
    s = res["rl_sigmas"]
    assert s[14] == 0 and s[0] > 0 and s[28] > 0
    # the held-apart scan that chose the kept epoch is left out of the unselected scores
    held, u = res["split"]["held_apart"], res["unselected"]
    assert u["scans"] == held[1:]
    assert u["input"]["fm_max_min"] != pytest.approx(float(res["criteria"][0]["input"]))
    assert "did not choose the kept epoch" in text


def test_self_ensemble_package_is_tested_and_says_so(synth, tmp_path):
    """`train zsegan --self-ensemble`: the package (three weight formats tested at export)
    rebuilds the averaging deploy module from its kwargs, and its card says what it does."""
    import zipfile

    from sharpstack.methods.zsegan.model import restore
    from sharpstack.workflows import load_run

    run = tmp_path / "run"
    _ok(runner.invoke(app, ["train", "zsegan", str(synth / "zscans"), str(synth / "infocus"),
                            str(run), "--self-ensemble"] + TINY_FLAGS))
    pkg = tmp_path / "ens.zip"
    res = _ok(runner.invoke(app, ["export", str(run), str(synth / "sample.tif"), str(pkg)]))
    assert "tested" in res.output
    with zipfile.ZipFile(pkg) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        card = z.read("README.md").decode()
    kwargs = rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
    assert kwargs["self_ensemble"] is True and "Self-ensemble" in card
    model = load_run(run).trained.model
    x = read_stack(synth / "sample.tif").values
    y = restore(model, x)
    yf = restore(model, np.ascontiguousarray(x[..., ::-1]))
    np.testing.assert_allclose(yf[..., ::-1], y, atol=1e-5)


def test_card_quality_scores_the_built_run_on_its_held_apart_scans(run, synth, tmp_path):
    """`bench zsegan --card RECIPE --built DIR`: the criteria of the built run's own weights on
    the z-scans it held apart, as JSON for `export --quality`."""
    from sharpstack.metrics import focus_measure
    from sharpstack.methods.zsegan.model import restore
    from sharpstack.workflows import load_run

    info = json.loads((run / "run.json").read_text())
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "id": "tiny-zsegan", "name": "tiny", "description": "test", "method": "zsegan",
        "data": {"inputs": [str(synth / "zscans"), str(synth / "infocus")]},
        "training": {"crop": 16}}))
    out = tmp_path / "q.json"
    res = _ok(runner.invoke(app, ["bench", "zsegan", "--card", str(recipe), "--built",
                                  str(run.parent), "--out", str(out), "--threads", "1"]))
    q = json.loads(out.read_text())["quality"]
    assert "1 held-apart z-scans" in q["evaluated on"], res.output
    held = info["record"]["split"]["held_apart"]
    model = load_run(run).trained.model
    y = restore(model, read_stack(synth / "zscans" / held[0]).values)
    fm = [focus_measure(p) for p in y]
    inp, rl, ours = q["FM max/min over the planes: input / RL / ZSE-GAN"].split(" / ")
    assert float(ours) == pytest.approx(max(fm) / min(fm), abs=1e-3)
    assert float(inp) != pytest.approx(float(ours), abs=1e-3)  # not the input scored twice
    # benchmark options do not apply to a built model; --built needs --card
    _clean_failure(runner.invoke(app, ["bench", "zsegan", "--card", str(recipe), "--epochs",
                                       "3", "--out", str(tmp_path / "q2.json")]),
                   "--card", "epochs")
    _clean_failure(runner.invoke(app, ["bench", "zsegan", "--built", str(run.parent),
                                       "--out", str(tmp_path / "b")]), "--built goes with")
    assert not (tmp_path / "q2.json").exists() and not (tmp_path / "b").exists()


def test_default_windows_match_one_window_and_the_sample_output(package):
    """Default windows on a stack larger than one window along every tiled axis (lengths
    not multiples of the step) == one window; the sample input reproduces the sample output."""
    shapes = assert_windows_agree(package)
    assert min(shapes["large"][-2:]) > 256


@pytest.mark.parametrize("planes", [28, 30, 57])
def test_zscan_of_the_wrong_plane_count_is_refused_not_padded(package, synth, tmp_path, planes):
    """A 29-plane model given 28, 30 or 57 planes: predict refuses (train and export refuse
    the same file) instead of padding planes into another focal position."""
    st = np.asarray(read_stack(synth / "sample.tif").values)
    whole = np.concatenate([st, st[::-1]], axis=0)[:planes]
    src = tmp_path / f"scan{planes}.tif"
    write_tiff(src, as_dataarray(whole, "ZYX"))
    res = runner.invoke(app, ["predict", str(package), str(src), str(tmp_path / "out.tif")])
    _clean_failure(res, "blocks of 29", f"input has {planes}")
    assert not (tmp_path / "out.tif").exists()


def test_two_stacked_zscans_are_sharpened_scan_by_scan(package, synth, tmp_path):
    st = np.asarray(read_stack(synth / "sample.tif").values)
    src = tmp_path / "two.tif"
    write_tiff(src, as_dataarray(np.concatenate([st, st[::-1]], axis=0), "ZYX"))
    _ok(runner.invoke(app, ["predict", str(package), str(src), str(tmp_path / "two_out.tif")]))
    one = tmp_path / "one.tif"
    write_tiff(one, as_dataarray(st[::-1].copy(), "ZYX"))
    _ok(runner.invoke(app, ["predict", str(package), str(one), str(tmp_path / "one_out.tif")]))
    two = read_stack(tmp_path / "two_out.tif").values
    assert two.shape[0] == 58
    # each scan is normalised with the statistics of the whole stack, so compare structure
    a, b = two[29:].ravel(), read_stack(tmp_path / "one_out.tif").values.ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.999
