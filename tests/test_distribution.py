"""The out-of-distribution warning: a package records its training data's statistics after
normalisation (``training_stats.json``), and predict warns when an input is far from them.

The package is the toy method's (``tests/toy_method``: a 2D one-convolution smoother trained
for two steps), exported from a smooth seeded stack."""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile

import numpy as np
import pytest
import xarray as xr
import yaml

from sharpstack.predict import distribution as dist


@pytest.fixture(scope="module")
def smooth_stack(tmp_path_factory):
    from scipy.ndimage import gaussian_filter

    from sharpstack.io import as_dataarray, write_tiff

    rng = np.random.default_rng(0)
    blobs = gaussian_filter(rng.gamma(0.3, 1.0, size=(4, 96, 96)), (0, 3, 3))
    data = (1000 * blobs / blobs.max() + rng.normal(0, 2, blobs.shape) + 100).astype(np.float32)
    path = tmp_path_factory.mktemp("ood_data") / "stack.tif"
    write_tiff(path, as_dataarray(data, "ZYX"))
    return path, data


@pytest.fixture(scope="module")
def package(smooth_stack, tmp_path_factory):
    from sharpstack import methods
    from sharpstack.workflows import export_run, train_run

    methods.REGISTRY["toy"] = "tests.toy_method:Toy"
    try:
        path, _ = smooth_stack
        run = tmp_path_factory.mktemp("ood_run") / "run"
        train_run("toy", [path], run, settings={"epochs": 1, "steps_per_epoch": 2})
        yield export_run(run, path, tmp_path_factory.mktemp("ood_pkg") / "toy.zip")
    finally:
        methods.REGISTRY.pop("toy", None)
        methods._CACHE.pop("toy", None)


def _predict(package, data, **kw):
    from sharpstack.predict import predict_array

    lines: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = predict_array(package, xr.DataArray(data, dims=("z", "y", "x")), check=False,
                            log=lines.append, **kw)
    ood = [str(w.message) for w in caught if "does not look like" in str(w.message)]
    return out, ood, lines


def test_the_package_records_training_statistics_as_a_hashed_json_attachment(package):
    from sharpstack.export.package import test_package

    with zipfile.ZipFile(package) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        raw = z.read(dist.STATS_FILE)
    (entry,) = [a for a in rdf["attachments"] if a["source"] == dist.STATS_FILE]
    assert entry["sha256"] == hashlib.sha256(raw).hexdigest()
    assert "config" not in rdf
    stats = json.loads(raw)
    assert stats["format"] == dist.FORMAT and len(stats["histogram"]) == dist.HIST_BINS + 2
    assert abs(sum(stats["histogram"]) - 1) < 1e-5 and stats["noise"] > 0
    # the toy's request names no stats data: its test input is measured
    assert stats["source"] == "the package's test input"
    assert "sharpstack train toy" in stats["retrain"]
    assert len(json.dumps(stats)) < 4000  # a few hundred numbers
    ok, report = test_package(package, ["onnx"])
    assert ok, report


def test_the_packages_own_sample_and_its_stack_do_not_warn(package, smooth_stack):
    from sharpstack.io import read_stack

    with zipfile.ZipFile(package) as z:
        z.extract("sample_input.tif", package.parent)
    sample = np.asarray(read_stack(package.parent / "sample_input.tif").values)
    _, data = smooth_stack
    for x in (sample[None], data):
        _, ood, lines = _predict(package, x)
        assert ood == []
        assert any("input vs training data" in ln for ln in lines)  # it was measured


def test_pure_noise_warns_and_names_the_noise_level(package):
    noise = np.random.default_rng(1).normal(100, 10, (4, 96, 96)).astype(np.float32)
    out, ood, _ = _predict(package, noise)
    assert out.shape == (4, 96, 96)  # a warning: the output is still computed
    (msg,) = ood
    assert "noise level is" in msg and "x the training data's" in msg
    assert "sharpstack train toy" in msg and "--no-distribution-check" in msg
    _, ood, lines = _predict(package, noise, distribution_check=False)
    assert ood == [] and not any("input vs training data" in ln for ln in lines)


def test_cli_warns_on_noise_and_exits_0(package, tmp_path):
    from typer.testing import CliRunner

    from sharpstack.cli import app
    from sharpstack.io import as_dataarray, write_tiff

    src = tmp_path / "noise.tif"
    write_tiff(src, as_dataarray(np.random.default_rng(2).normal(
        100, 10, (2, 64, 64)).astype(np.float32), "ZYX"))
    res = CliRunner().invoke(app, ["predict", str(package), str(src), str(tmp_path / "o.tif"),
                                   "--no-check"])
    assert res.exit_code == 0, res.output
    assert "warning: the input does not look like" in res.output
    assert (tmp_path / "o.tif").exists()


def test_a_package_without_statistics_predicts_with_one_info_line(package, smooth_stack,
                                                                  tmp_path):
    folder = tmp_path / "pkg"
    with zipfile.ZipFile(package) as z:
        z.extractall(folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    rdf["attachments"] = [a for a in rdf["attachments"] if a["source"] != dist.STATS_FILE]
    (folder / dist.STATS_FILE).unlink()
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    noise = np.random.default_rng(1).normal(100, 10, (4, 96, 96)).astype(np.float32)
    out, ood, lines = _predict(folder / "rdf.yaml", noise)
    assert ood == [] and out.shape == (4, 96, 96)
    assert any("records no training statistics" in ln for ln in lines)


def test_a_damaged_statistics_file_is_named_and_skipped(package, tmp_path):
    folder = tmp_path / "pkg"
    with zipfile.ZipFile(package) as z:
        z.extractall(folder)
    bad = b'{"format": "sharpstack-training-stats/1", "histogram": "__import__(\'os\')"}'
    (folder / dist.STATS_FILE).write_bytes(bad)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    for a in rdf["attachments"]:
        if a["source"] == dist.STATS_FILE:
            a["sha256"] = hashlib.sha256(bad).hexdigest()
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    data = np.random.default_rng(1).normal(100, 10, (2, 64, 64)).astype(np.float32)
    _, ood, lines = _predict(folder / "rdf.yaml", data)
    assert ood == []
    assert any(f"its {dist.STATS_FILE} cannot be used" in ln for ln in lines)


# --------------------------------------------------------------------------------------------
# the comparison on hand-made statistics
# --------------------------------------------------------------------------------------------

def _stats(hist, noise, spectrum):
    return {"histogram": hist, "noise": noise, "spectrum": spectrum}


def test_js_distance_is_0_for_equal_and_1_for_disjoint_histograms():
    assert dist.js_distance([1, 2, 3], [2, 4, 6]) == pytest.approx(0, abs=1e-12)
    assert dist.js_distance([1, 0, 0], [0, 0, 1]) == pytest.approx(1)


def test_spectrum_distance_is_the_rms_log_ratio_of_the_shapes():
    assert dist.spectrum_distance([1, 2, 4], [10, 20, 40]) == pytest.approx(0, abs=1e-12)
    d = dist.spectrum_distance([1, 1], [1, 100])
    assert d == pytest.approx(1.0, rel=1e-6)  # log10 ratios +1 and -1 after normalising
    assert dist.spectrum_distance([1, None, 1], [1, 5, 100]) == pytest.approx(1.0, rel=1e-6)


def test_compare_flags_each_measure_beyond_its_threshold():
    base = _stats([0.5, 0.5, 0, 0], 0.01, [0.6, 0.3, 0.1])
    assert dist.compare(base, base).far() == []
    d = dist.compare(base, _stats([0.5, 0.5, 0, 0], 0.062, [0.6, 0.3, 0.1]))
    assert d.noise_ratio == pytest.approx(6.2) and d.far() == ["noise"]
    assert dist.compare(base, _stats([0.5, 0.5, 0, 0], 0.002, [0.6, 0.3, 0.1])).far() == [
        "noise"]  # much cleaner is out of distribution too
    assert dist.compare(base, _stats([0, 0, 0.5, 0.5], 0.01, [0.6, 0.3, 0.1])).far() == [
        "histogram"]
    assert dist.compare(base, _stats([0.5, 0.5, 0, 0], 0.01, [0.01, 0.1, 0.89])).far() == [
        "spectrum"]


def test_the_warning_names_what_differs_with_numbers():
    rec = {**_stats([0.5, 0.5, 0, 0], 0.01, [0.6, 0.3, 0.1]), "retrain": "sharpstack train x",
           "quantiles": {"50": 0.1, "95": 0.6}}
    meas = {**_stats([0, 0, 0.5, 0.5], 0.062, [0.01, 0.1, 0.89]),
            "quantiles": {"50": 0.5, "95": 0.9}}
    d = dist.compare(rec, meas)
    text = dist.describe(d, rec, meas, d.far())
    assert "noise level is 6.2x the training data's" in text
    assert "Jensen-Shannon distance 1.00" in text and "50th percentile 0.50 vs 0.10" in text
    assert "more power at fine scales" in text and "`sharpstack train x`" in text


def test_statistics_are_measured_after_normalisation():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (3, 64, 64)).astype(np.float32)
    a = dist.training_statistics(x, 1, 99.8)
    b = dist.training_statistics(1000 * x + 5, 1, 99.8)  # another scale, same after scale_range
    assert dist.compare(a, b).far() == []
    assert dist.compare(a, b).histogram < 0.01
    # white noise: noise level ~ 1 / (p99.8 - p1) of the unit normal, a flat spectrum
    assert a["noise"] == pytest.approx(1 / (2.878 + 2.326), rel=0.1)
    spec = np.array(a["spectrum"])
    assert spec.max() / spec.min() < 2.5  # 32 px: few frequencies in the lowest band


def test_parse_recorded_refuses_what_is_not_our_format():
    good = dist.training_statistics(np.random.default_rng(0).normal(size=(32, 32)), 1, 99)
    assert dist.parse_recorded(json.dumps(good).encode())["noise"] == good["noise"]
    for bad in ({**good, "format": "x"}, {**good, "histogram": [1, 2]},
                {**good, "noise": float("nan")}, {**good, "histogram_bins": 7}, [1, 2]):
        with pytest.raises(ValueError):
            dist.parse_recorded(json.dumps(bad).encode())
    with pytest.raises(ValueError, match="larger than"):
        dist.parse_recorded(b" " * (dist.MAX_BYTES + 1))
    assert dist.parse_recorded(json.dumps({**good, "retrain": "a\x1b[31mb"}).encode())[
        "retrain"] == "a[31mb"
