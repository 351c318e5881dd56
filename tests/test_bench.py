"""Tests of the IsoNet Table 1 benchmark (tiny, seeded, synthetic)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from sharpstack import bench
from sharpstack.errors import InputError
from sharpstack.metrics import psnr_normalized


def test_public_names():
    for name in bench.__all__:
        assert hasattr(bench, name), name
    assert bench.METHODS == ("blurred", "rl", "srcnn", "isonet1_full", "isonet1_split",
                             "isonet2_full", "isonet2_split")
    assert set(bench.DATASETS) == {"nuclei", "membranes", "nuclei+membranes"}
    # the paper's axial factors and PSF types
    assert {d: s.factor for d, s in bench.DATASETS.items()} == {
        "nuclei": 8, "membranes": 4, "nuclei+membranes": 6}
    assert bench.PAPER_TABLE1["nuclei"]["iso_gt"]["isonet2_split"] == (35.61, 0.18)
    assert bench.PAPER_TABLE1["membranes"]["gt"]["blurred"] == (15.95, 0.01)


@pytest.mark.parametrize("size,factor,expected", [
    (128, 8, (128, 128, 128)), (128, 6, (126, 128, 128)), ((50, 64, 48), 4, (48, 64, 48)),
])
def test_dataset_shape_crops_z_to_factor(size, factor, expected):
    assert bench.dataset_shape(size, factor) == expected


@pytest.mark.parametrize("size", [16, (64, 16, 64), (8, 64, 64), (1, 2)])
def test_dataset_shape_rejects_too_small(size):
    with pytest.raises(InputError, match="size"):
        bench.dataset_shape(size, 8)


def test_make_volume_protocol():
    spec = bench.DATASETS["membranes"]
    shape = bench.dataset_shape((32, 40, 40), spec.factor)
    vol = bench.make_volume(spec, shape, seed=3)
    assert vol["gt"].shape == vol["iso_gt"].shape == vol["blurred"].shape == shape
    assert vol["stack"].shape == (shape[0] // spec.factor, *shape[1:])
    # the upsampled input reproduces the acquired slices exactly
    np.testing.assert_array_equal(vol["blurred"][::spec.factor], vol["stack"])
    # noise is on: the acquisition is not the noiseless blur
    from sharpstack.degrade import blur
    clean = blur(vol["gt"], vol["psf"])[::spec.factor]
    assert 0 < float(np.abs(vol["stack"] - clean).mean())
    assert vol["gauss_sigma"] > 0
    # seeded
    again = bench.make_volume(spec, shape, seed=3)
    np.testing.assert_array_equal(again["stack"], vol["stack"])
    # the isotropic GT is sharper than the input along z: closer to the GT than the input is
    assert psnr_normalized(vol["gt"], vol["iso_gt"]) > psnr_normalized(vol["gt"], vol["blurred"])


def test_make_volume_rejects_bad_z():
    with pytest.raises(InputError, match="multiple of the factor"):
        bench.make_volume(bench.DATASETS["nuclei"], (36, 32, 32), seed=0)


def test_run_rejects_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="unknown dataset"):
        bench.run_isonet_table1(tmp_path, datasets=["nucleus"])
    with pytest.raises(InputError, match="n_volumes"):
        bench.run_isonet_table1(tmp_path, n_volumes=0)
    with pytest.raises(InputError, match="set by the benchmark"):
        bench.run_isonet_table1(tmp_path, isonet={"epochs": 3})


@pytest.fixture
def one_thread():
    """One torch thread: the tiny convolutions gain nothing from more on a shared machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_tiny_run_writes_table(tmp_path, one_thread):
    out = tmp_path / "bench"
    msgs: list[str] = []
    res = bench.run_isonet_table1(
        out, size=(32, 48, 48), n_volumes=1, epochs=1, steps_per_epoch=1,
        datasets="nuclei", seed=0, on_step=msgs.append,
        isonet={"n_patches": 16, "patch_size": 32, "batch_size": 4},
        rl_iterations=(1, 3))
    for name in ("table1.md", "table1.csv", "axial_slices.png", "results.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert msgs and msgs[-1].startswith("done")

    # table: the seven columns, ours and the paper's values side by side
    md = (out / "table1.md").read_text(encoding="utf-8")
    header = next(line for line in md.splitlines() if line.startswith("| dataset | reference"))
    for m in bench.METHODS:
        assert bench.METHOD_TITLES[m] in header
    assert header.count("|") == 3 + len(bench.METHODS) + 1
    assert "35.61 (0.18)" in md and "25.84 (0.17)" in md and "29.51 (0.10)" in md
    assert "0.923" in md and "0.913" in md  # SEG of the paper

    # numbers finite, in a sane dB range, per volume and summarised
    summ = res["summary"]["nuclei"]
    for ref in ("iso_gt", "gt"):
        for m in bench.METHODS:
            mean, std = summ["psnr"][ref][m]
            assert math.isfinite(mean) and math.isfinite(std) and 0 < mean < 80, (ref, m)
            vals = [r["psnr"][ref][m] for r in res["per_volume"]["nuclei"]]
            assert len(vals) == 1
            assert mean == pytest.approx(vals[0]) and std == 0.0
    # the blurred column is the CARE PSNR of the upsampled input, recomputed independently
    spec = bench.DATASETS["nuclei"]
    vol = bench.make_volume(spec, (32, 48, 48), seed=0)
    assert res["per_volume"]["nuclei"][0]["psnr"]["iso_gt"]["blurred"] == pytest.approx(
        psnr_normalized(vol["iso_gt"], vol["blurred"]), abs=1e-6)
    # oracle RL scores at least as well as the first iteration count tried
    rec = res["per_volume"]["nuclei"][0]
    assert rec["psnr"]["iso_gt"]["rl"] == pytest.approx(max(rec["rl_scores"].values()))
    assert summ["isonet2_best"] in ("isonet2_full", "isonet2_split")
    # SEG: values in [0, 1], IsoNet-2 entry is the best mode's
    for k in ("gt", "blurred", "isonet2"):
        assert 0.0 <= summ["seg"][k][0] <= 1.0
    best = summ["isonet2_best"]
    assert summ["seg"]["isonet2"][0] == pytest.approx(
        np.mean([r["seg"][best] for r in res["per_volume"]["nuclei"]]))

    # CSV: 2 references x 7 columns + 3 SEG rows, with the paper's values
    with open(out / "table1.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 7 + 3
    r = next(r for r in rows if r["reference"] == "iso_gt" and r["method"] == "isonet2_split")
    assert float(r["paper_mean"]) == 35.61 and len(r["values"].split()) == 1

    # JSON round-trips with the settings that produced it
    js = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert js["settings"]["n_volumes"] == 1 and js["settings"]["epochs"] == 1
    assert js["settings"]["shapes"]["nuclei"] == [32, 48, 48]
    assert js["per_volume"]["nuclei"][0]["n_nuclei"] >= 1


def test_mean_std_and_seg_helpers():
    assert bench._mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2.0)))
    assert bench._mean_std([5.0]) == (5.0, 0.0)
    m, s = bench._mean_std([])
    assert math.isnan(m) and math.isnan(s)
    from sharpstack.metrics import seg_score
    from sharpstack.segmentation import segment_nuclei

    lab = np.zeros((16, 16, 16), np.int32)
    lab[4:12, 4:12, 4:12] = 1
    # a constant image cannot be thresholded: it segments nothing and scores 0
    assert bench._seg(lab, np.zeros(lab.shape, np.float32), segment_nuclei, seg_score) == 0.0
    # a clean image of the object scores (almost) 1
    img = (lab > 0).astype(np.float32) + 0.01 * np.random.default_rng(0).random(lab.shape)
    assert bench._seg(lab, img.astype(np.float32), segment_nuclei, seg_score) > 0.9
