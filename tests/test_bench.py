"""Tests of the IsoNet Table 1 benchmark (tiny, seeded, synthetic), and of the one entry point
of every paper's tables, ``sharpstack bench <method>`` (no script beside it to drift from)."""

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
    from sharpstack.methods.isonet.acquisition import blur
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
    from sharpstack.methods.isonet.acquisition import blur
    from sharpstack.methods.isonet.optics import isotropic_psf

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
    from sharpstack.methods.isonet.segmentation import segment_nuclei

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


# ------------------------------------------------------------------ one entry point per paper
# ``sharpstack bench <method>`` is the only way to the papers' tables: its options are declared
# once, in ``methods/<name>/plugin.py``. The scripts ``benchmarks/<method>.py`` it replaced
# are gone; the tests below keep them from coming back and keep the CLI equivalent to them
# (the README's figures were measured with them).

import inspect
import os
import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
_RUN = {"isonet": ("sharpstack.methods.isonet.bench", "run_isonet_table1"),
        "dqlr": ("sharpstack.methods.dqlr.bench", "run_dqlr_bench"),
        "zsegan": ("sharpstack.methods.zsegan.bench", "run_zsegan_bench"),
        "disentangled": ("sharpstack.methods.disentangled.bench", "run_disentangled_bench")}
# keywords of the protocol functions that no option sets: fixed parts of the protocol, or
# set by the method's bench() itself (progress, logging, --threads)
_INTERNAL = {"isonet": {"noise", "rl_iterations", "progress", "on_step"},
             "dqlr": {"rl_iterations", "real_sigma", "real_rl_iterations", "threads",
                      "progress", "on_step"},
             "zsegan": {"rl_iterations", "data_dir", "export", "progress"},
             "disentangled": {"synthetic_size", "extra", "rl_iterations", "n_train_scored",
                              "data_dir", "real_focus_plane", "progress", "on_step"}}
# options that steer bench() instead of naming a keyword (or choose another benchmark than
# the paper's tables: IsoNet's real spot stacks, the disentangled model's real defocus pairs)
_STEERING = {"isonet": {"quiet", "real"}, "zsegan": {"card", "built"},
             "disentangled": {"card", "built", "pairs", "architecture"}, "dqlr": set()}
_OTHER_ROUTES = {"isonet": [("sharpstack.methods.isonet.realbench", "run_isonet_real")],
                 "disentangled": [("sharpstack.methods.disentangled.pairs", "run_pairs_bench")]}
# what the CLI does not measure: prediction speed and memory, old runtimes, training speed
_KEPT_SCRIPTS = {"predict_speed.py", "old_runtimes.py", "train_speed.py"}


def _run_fn(name):
    import importlib

    mod, fn = _RUN[name]
    return importlib.import_module(mod), fn


def test_every_method_with_a_benchmark_is_covered_here():
    from sharpstack.methods import get_method, method_names

    assert {m for m in method_names() if get_method(m).has_bench} == set(_RUN)


def test_no_script_beside_the_cli_bench():
    """benchmarks/ keeps only what the CLI does not measure (speed, memory, old runtimes);
    none of its scripts reaches a paper's protocol function on its own."""
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py")}
    assert scripts == _KEPT_SCRIPTS, (
        f"benchmarks/ has {sorted(scripts - _KEPT_SCRIPTS)}: a paper's tables belong to "
        "`sharpstack bench <method>` (options in methods/<name>/plugin.py)")
    for name in scripts:
        text = (ROOT / "benchmarks" / name).read_text(encoding="utf-8")
        for mod, fn in _RUN.values():
            assert fn not in text and mod not in text, (name, fn)


@pytest.mark.parametrize("name", sorted(_RUN))
def test_bench_options_reach_every_parameter_of_the_protocol(name):
    """Every keyword of the protocol function is an option of `sharpstack bench` or a
    declared fixed part of the protocol, and every option names a keyword: a parameter added
    to one side without the other fails here."""
    from sharpstack.methods import get_method

    mod, fn = _run_fn(name)
    params = set(list(inspect.signature(getattr(mod, fn)).parameters)[1:])
    keys = {o.key.split(".")[0] for o in get_method(name).bench_options}
    flags = [o.flag for o in get_method(name).bench_options]
    assert len(flags) == len(set(flags)) and "threads" not in flags and "out" not in flags
    assert keys - _STEERING[name] <= params, keys - _STEERING[name] - params
    assert params - keys == _INTERNAL[name], params - keys


# what the removed scripts passed (recorded from benchmarks/<method>.py before they went,
# after filling in the protocol functions' defaults): their defaults, then each README command
_OLD_DEFAULTS = {
    "isonet": {"threads": 1, "size": 160, "n_volumes": 2, "epochs": 60, "steps_per_epoch": 40,
               "datasets": ["nuclei", "membranes", "nuclei+membranes"], "device": None,
               "seed": 0, "jobs": 2, "isonet": {"batch_size": 8, "patch_size": 48,
                                                "n_patches": 1024, "lr": 1e-3, "dropout": 0.0}},
    "dqlr": {"threads": None, "steps": 1500, "epochs": 20, "n_stacks": 2,
             "kinds": ["membranes", "nuclei"], "real": True, "real_data": None,
             "shape": [48, 128, 128], "photons": 50.0, "settings": {}, "jobs": 1,
             "device": None, "seed": 0},
    "zsegan": {"threads": 2, "crop": 48, "ngf": 8, "n_res": 3, "ndf": 16, "sections": 4,
               "epochs": 40, "steps_per_epoch": 64, "val_count": 16, "lambda_identity": 0.5,
               "use_vertical": False, "device": None, "seed": 0, "residual": True,
               "upsample": "resize", "lambda_cycle": 10.5,
               "extra": {"d_norm": "instance", "infocus_match": "none"}, "resume": False},
    "disentangled": {"threads": 1, "datasets": ["synthetic", "real"],
                     "models": ["mlvae", "manifold", "manifold1d", "no_cross",
                                "no_contrastive"], "channels": [16, 32, 64],
                     "id_channels": 128, "blur_channels": None, "patch_size": 64,
                     "epochs": 10, "steps_per_epoch": 45, "batch_size": 8, "n_synthetic": 48,
                     "jobs": 2, "device": None, "seed": 0, "keep_runs": False},
}
_OLD_COMMANDS = [  # (the README's `sharpstack bench` command, what the old script ran)
    ("isonet --out bench_out/isonet_table1", {"out": "bench_out/isonet_table1"}),
    ("isonet --size 160 --volumes 2 --epochs 60 --steps 40 --threads 1 --jobs 2",
     {"out": "bench_out/isonet"}),
    ("isonet --size 512 --volumes 10 --epochs 100 --steps 100 --batch 16 --patch 64 --lr 5e-3 "
     "--dropout 0.2 --device cuda --out bench_out/isonet_table1_full",
     {"out": "bench_out/isonet_table1_full", "size": 512, "n_volumes": 10, "epochs": 100,
      "steps_per_epoch": 100, "device": "cuda", "jobs": 1,
      "isonet": {"batch_size": 16, "patch_size": 64, "n_patches": 1024, "lr": 5e-3,
                 "dropout": 0.2}}),
    ("dqlr --out bench_out/dqlr --steps 700 --epochs 10 --jobs 2 --threads 1",
     {"out": "bench_out/dqlr", "steps": 700, "epochs": 10, "jobs": 2, "threads": 1}),
    ("dqlr --out bench_out/dqlr_full --steps 20000 --epochs 100 --hidden 128 --rnn-hidden 64 "
     "--res-hidden 32 --patch 64 --batch 32 --lr 3e-4 --lr-schedule constant --stacks 4 "
     "--shape 64,256,256 --device cuda",
     {"out": "bench_out/dqlr_full", "steps": 20000, "epochs": 100, "n_stacks": 4,
      "shape": [64, 256, 256], "device": "cuda",
      "settings": {"hidden": 128, "rnn_hidden": 64, "res_hidden": 32, "patch_size": 64,
                   "batch_size": 32, "lr": 3e-4, "lr_schedule": "constant"}}),
    ("zsegan --out bench_out/zsegan --epochs 20 --d-norm none --infocus-match focal "
     "--threads 2", {"out": "bench_out/zsegan", "epochs": 20,
                     "extra": {"d_norm": "none", "infocus_match": "focal"}}),
    ("zsegan --crop 128 --ngf 16 --res-blocks 6 --ndf 32 --sections 1 --no-residual "
     "--upsample transposed --epochs 200 --steps 64 --device cuda --out bench_out/zsegan_paper",
     {"out": "bench_out/zsegan_paper", "crop": 128, "ngf": 16, "n_res": 6, "ndf": 32,
      "sections": 1, "residual": False, "upsample": "transposed", "epochs": 200,
      "device": "cuda"}),
    ("disentangled --out bench_out/disentangled --model mlvae --model manifold "
     "--model manifold1d --jobs 2 --threads 1",
     {"out": "bench_out/disentangled", "models": ["mlvae", "manifold", "manifold1d"]}),
    ("disentangled --channels 64,128,256,512 --id-channels 512 --blur-channels 512 "
     "--patch 128 --epochs 400 --steps 100 --batch 16 --jobs 1 --device cuda "
     "--out bench_out/disentangled_paper",
     {"out": "bench_out/disentangled_paper", "channels": [64, 128, 256, 512],
      "id_channels": 512, "blur_channels": 512, "patch_size": 128, "epochs": 400,
      "steps_per_epoch": 100, "batch_size": 16, "jobs": 1, "device": "cuda"}),
] + [(f"{m} --out bench_out/{m}", {"out": f"bench_out/{m}"}) for m in sorted(_RUN)]

_THREADS_BEFORE = 3  # torch's thread count when a command starts (None above: left so)


def _effective(name, kw, threads):
    """What a protocol function was asked to run, its own defaults filled in."""
    from sharpstack.methods.zsegan.bench import REDUCED

    eff = dict(kw)
    eff["threads"] = kw.get("threads") or threads
    for k, v in eff.items():
        eff[k] = list(v) if isinstance(v, tuple) else v
    if name == "isonet":
        if isinstance(eff["datasets"], str):
            eff["datasets"] = eff["datasets"].split(",")
        size = eff["size"] if isinstance(eff["size"], int) else min(eff["size"][1:])
        eff["isonet"] = {"patch_size": min(48, 16 * (size // 16)), "n_patches": 1024,
                         "batch_size": 8, "lr": 1e-3, "dropout": 0.0, **(eff["isonet"] or {})}
    if name == "dqlr":
        eff["settings"] = eff["settings"] or {}
    if name == "zsegan":
        eff.update({k: REDUCED[k] for k in REDUCED if k in eff and eff[k] is None})
        eff["extra"] = {"d_norm": "instance", "infocus_match": "none", **(eff["extra"] or {})}
    return eff


def _run_cli(monkeypatch, args):
    """Run `sharpstack bench ARGS` with the protocol function replaced by a recorder (on a
    2-core CPU without GPU); returns the method's name and what the function got."""
    import torch

    from sharpstack.cli import app

    name = args.split()[0]
    mod, fn = _run_fn(name)
    defaults = {k: p.default for k, p in
                list(inspect.signature(getattr(mod, fn)).parameters.items())[1:]}
    got = {}

    def record(out_dir, **kw):
        got.update(defaults, **kw, out=str(out_dir))
        got["_threads"] = torch.get_num_threads()
        return {}

    monkeypatch.setattr(mod, fn, record)
    for amod, afn in _OTHER_ROUTES.get(name, ()):  # benchmarks beside the paper's tables
        import importlib

        def other(out_dir, _route=afn, **kw):
            got.update(kw, out=str(out_dir), _route=_route)
            got["_threads"] = torch.get_num_threads()
            return {}

        monkeypatch.setattr(importlib.import_module(amod), afn, other)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    n = torch.get_num_threads()
    torch.set_num_threads(_THREADS_BEFORE)
    try:
        res = CliRunner().invoke(app, ["bench", *shlex.split(args)])
    finally:
        torch.set_num_threads(n)
    assert res.exit_code == 0, res.output
    if "_route" in got:  # another benchmark than the paper's tables: what it was given
        return name, {k: v for k, v in got.items() if k != "_threads"}
    return name, _effective(name, {k: v for k, v in got.items() if k != "_threads"},
                            got["_threads"])


@pytest.mark.parametrize("args,changed", _OLD_COMMANDS, ids=[c[0] for c in _OLD_COMMANDS])
def test_cli_bench_runs_what_the_old_script_ran(monkeypatch, args, changed):
    """Same defaults, same README commands: the figures measured with the old scripts are
    those of the CLI."""
    name, eff = _run_cli(monkeypatch, args)
    want = {**_OLD_DEFAULTS[name], **changed}
    want["threads"] = want["threads"] or _THREADS_BEFORE
    assert {k: eff[k] for k in want} == want


def _readme_bench_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    spans = re.findall(r"`(sharpstack bench [^`]+)`", text)  # inline, possibly wrapped
    spans += re.findall(r"^(?:flock \S+ )?(sharpstack bench .+)$", text, flags=re.M)
    return [" ".join(s.split()).split("#")[0].strip().removeprefix("sharpstack bench ")
            for s in spans if "<" not in s and "..." not in s]


def test_readme_bench_commands_are_checked_here(monkeypatch):
    """Every `sharpstack bench` command of the README runs (with a recorder for the protocol)
    and is one of the commands whose equivalence to the old scripts is checked above."""
    cmds = _readme_bench_commands()
    assert len(cmds) >= 9, cmds
    checked = {" ".join(a.split()) for a, _ in _OLD_COMMANDS}
    for c in cmds:
        if c.split()[0] in ("disentangled", "zsegan") and "--card" in c:
            continue  # scores a built zoo model, not the tables
        if ("--real" in c.split() and c.split()[0] == "isonet") or (
                "--pairs" in c.split() and c.split()[0] == "disentangled"):
            assert _run_cli(monkeypatch, c)[1]["_route"]  # runs, on its own benchmark
            continue  # no old script ran these: new benchmarks beside the paper's tables
        if c not in checked:  # a command measured after the old scripts went: it must run
            name, eff = _run_cli(monkeypatch, c)
            assert "_route" not in eff and eff["out"], c
            continue
        assert c in checked, c


def test_bench_card_mode_refuses_benchmark_options(tmp_path):
    from sharpstack.cli import app

    from ._cli import clean_failure

    res = CliRunner().invoke(app, ["bench", "disentangled", "--card", "r.yaml", "--epochs",
                                   "3", "--out", str(tmp_path / "q.json")])
    clean_failure(res, "--card", "epochs")
    res = CliRunner().invoke(app, ["bench", "zsegan", "--upsample", "bilinear",
                                   "--out", str(tmp_path)])
    clean_failure(res, "--upsample", "transposed")
