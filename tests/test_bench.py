"""Tests of the IsoNet Table 1 benchmark (tiny, seeded, synthetic)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from sharpstack.methods.isonet import bench
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
    (128, 8, (121, 128, 128)), (128, 6, (127, 128, 128)), ((50, 64, 48), 4, (49, 64, 48)),
    ((25, 32, 32), 8, (25, 32, 32)),
])
def test_dataset_shape_is_the_span_of_the_acquired_slices(size, factor, expected):
    shape = bench.dataset_shape(size, factor)
    assert shape == expected
    assert (shape[0] - 1) % factor == 0 and shape[0] <= (size if isinstance(size, int)
                                                          else size[0])


@pytest.mark.parametrize("size", [16, (64, 16, 64), (8, 64, 64), (1, 2)])
def test_dataset_shape_rejects_too_small(size):
    with pytest.raises(InputError, match="size"):
        bench.dataset_shape(size, 8)


def test_make_volume_protocol():
    spec = bench.DATASETS["membranes"]
    shape = bench.dataset_shape((32, 40, 40), spec.factor)
    vol = bench.make_volume(spec, shape, seed=3)
    assert vol["gt"].shape == vol["iso_gt"].shape == vol["blurred"].shape == shape
    # first and last planes acquired: (Z - 1) / factor + 1 slices
    assert vol["stack"].shape == ((shape[0] - 1) // spec.factor + 1, *shape[1:])
    # the upsampled input reproduces the acquired slices exactly, the last one included
    np.testing.assert_array_equal(vol["blurred"][::spec.factor], vol["stack"])
    np.testing.assert_array_equal(vol["blurred"][-1], vol["stack"][-1])
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
    with pytest.raises(InputError, match="dataset_shape"):
        bench.make_volume(bench.DATASETS["nuclei"], (32, 32, 32), seed=0)


def test_make_volume_borders_are_cut_from_a_larger_specimen():
    """The field of view is a crop: its borders hold the blur of what lies outside, not a
    mirror of the inside. A reflecting border would make the blurred first plane the blur of
    a z-symmetric volume, i.e. identical to blurring the mirrored phantom; the crop is not."""
    from sharpstack import phantoms

    spec = bench.DATASETS["nuclei"]
    shape = bench.dataset_shape((25, 48, 48), spec.factor)
    vol = bench.make_volume(spec, shape, seed=2, noise={"poisson_peak": 1e9, "read_noise": 0})
    psf = vol["psf"]
    m = tuple(k // 2 for k in psf.shape)
    big = tuple(s + 2 * mm for s, mm in zip(shape, m))
    gt_big = phantoms.nuclei(big, seed=2)
    crop = tuple(slice(mm, mm + s) for s, mm in zip(shape, m))
    np.testing.assert_array_equal(vol["gt"], gt_big[crop])
    # the isotropic GT is the crop of the large blurred specimen, not the blur of the crop
    np.testing.assert_allclose(vol["iso_gt"], _iso_blur(gt_big, psf)[crop], rtol=1e-4,
                               atol=1e-6)
    assert not np.allclose(vol["iso_gt"], _iso_blur(vol["gt"], psf), rtol=1e-3, atol=1e-4)


def _iso_blur(volume, psf):
    from sharpstack.degrade import blur
    from sharpstack.psf import isotropic_psf

    return blur(volume, isotropic_psf(psf))


def test_run_rejects_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="unknown dataset"):
        bench.run_isonet_table1(tmp_path, datasets=["nucleus"])
    with pytest.raises(InputError, match="n_volumes"):
        bench.run_isonet_table1(tmp_path, n_volumes=0)
    with pytest.raises(InputError, match="set by the benchmark"):
        bench.run_isonet_table1(tmp_path, isonet={"epochs": 3})


    with pytest.raises(InputError, match="jobs"):
        bench.run_isonet_table1(tmp_path, jobs=0)


_TINY = dict(size=(40, 48, 48), n_volumes=1, epochs=1, steps_per_epoch=1, datasets="nuclei",
             seed=0, isonet={"n_patches": 16, "patch_size": 32, "batch_size": 4},
             rl_iterations=(1, 3))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny benchmark run in this process (one torch thread: the tiny convolutions gain
    nothing from more on a shared machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bench")
    msgs: list[str] = []
    try:
        res = bench.run_isonet_table1(out, on_step=msgs.append, **_TINY)
    finally:
        torch.set_num_threads(n)
    return out, res, msgs


def test_tiny_run_writes_table(tiny_run):
    out, res, msgs = tiny_run
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
    vol = bench.make_volume(spec, bench.dataset_shape((40, 48, 48), spec.factor), seed=0)
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
    assert js["settings"]["shapes"]["nuclei"] == [33, 48, 48]  # span of 5 slices at x8
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


def test_worker_processes_give_the_same_table(tiny_run, tmp_path):
    """jobs=2 runs the trainings and Richardson-Lucy in two worker processes: every job is
    seeded, so the numbers are those of the in-process run; only the wall time changes."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers take this process's thread count
    try:
        res2 = bench.run_isonet_table1(tmp_path / "b2", jobs=2, **_TINY)
    finally:
        torch.set_num_threads(n)
    _, res1, _ = tiny_run
    r1, r2 = res1["per_volume"]["nuclei"][0], res2["per_volume"]["nuclei"][0]
    for ref in ("iso_gt", "gt"):
        for m in bench.METHODS:
            assert r2["psnr"][ref][m] == pytest.approx(r1["psnr"][ref][m], abs=1e-5), (ref, m)
    assert r2["seg"] == pytest.approx(r1["seg"], abs=1e-6)
    assert r2["rl_iterations"] == r1["rl_iterations"]
    assert res2["settings"]["jobs"] == 2 and res1["settings"]["jobs"] == 1
    assert (tmp_path / "b2" / "table1.md").is_file()
