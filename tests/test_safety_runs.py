"""Right output or no output (issue 17): a finished run is never lost to ``train --overwrite``,
promised messages instead of crashes, wrong input refused instead of accepted, and messages
that name a command-line remedy.

Every case asserts real behaviour through the CLI (or the library function behind it): the exit
code, one message naming the problem and the fix, no traceback, inputs and finished runs
byte for byte unchanged, and nothing half-written left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from sharpstack.cli import app

from ._cli import clean_failure, ok

runner = CliRunner()

TINY_CLI = ["--epochs", "1", "--steps-per-epoch", "2", "--patches", "16", "--patch-size", "32",
            "--batch-size", "4", "--dropout", "0", "--threads", "1"]


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _digest(*paths) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files or folders)."""
    out = {}
    for p in map(Path, paths):
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _temps(folder) -> list[Path]:
    return sorted(Path(folder).glob(".sharpstack-*"))


def _tif(path, array, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, imagej=True, **kw)
    return path


def _stack_tif(path, array) -> Path:
    """An ImageJ TIFF calibrated z 1.6 µm, xy 0.2 µm (IsoNet's factor 8 from the file)."""
    return _tif(path, array, resolution=(5.0, 5.0),
                metadata={"axes": "ZYX", "unit": "um", "spacing": 1.6})


def _rand(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _with_nan(shape):
    a = _rand(shape)
    a.flat[5] = np.nan
    return a


def _truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


@pytest.fixture
def stack(tmp_path, synth_data):
    """A private copy of the tiny calibrated anisotropic stack (ZYX, z 1.6 µm, xy 0.2 µm)."""
    p = tmp_path / "in" / "stack.tif"
    p.parent.mkdir()
    shutil.copyfile(synth_data["paths"]["anisotropic"], p)
    return p


@pytest.fixture
def tiny_run(stack, tmp_path):
    run = tmp_path / "run"
    ok(_cli("train", "isonet", stack, run, *TINY_CLI))
    (run / "notes.txt").write_text("the user's own notes")  # not a run file: must survive
    return run


# ------------------------------------------------------------------------------------------
# item 2: train --overwrite replaces a run only with a complete new one
# ------------------------------------------------------------------------------------------

def _fake_run(folder: Path) -> Path:
    """A finished run's files (their content does not matter to --overwrite)."""
    folder.mkdir(parents=True)
    for name in ("model.pt", "last.pt", "best.pt", "history.json", "loss_curve.png"):
        (folder / name).write_bytes(f"old {name}".encode())
    (folder / "run.json").write_text(json.dumps({"method": "isonet", "status": "trained",
                                                 "settings": {}}))
    return folder


def _isonet_nan(d: Path):
    return [_stack_tif(d / "nan.tif", _with_nan((16, 64, 64)))], ["NaN"]


def _isonet_truncated(d: Path):
    return [_truncated(_stack_tif(d / "cut.tif", _rand((16, 64, 64))))], ["cut.tif"]


def _dqlr_nan(d: Path):
    _tif(d / "stacks" / "a.tif", _rand((12, 64, 64)), metadata={"axes": "ZYX"})
    _tif(d / "stacks" / "b.tif", _with_nan((12, 64, 64)), metadata={"axes": "ZYX"})
    return [d / "stacks"], ["NaN"]


def _dqlr_truncated(d: Path):
    return [_truncated(_tif(d / "cut.tif", _rand((12, 64, 64)), metadata={"axes": "ZYX"}))], \
        ["cut.tif"]


def _zsegan_nan(d: Path):
    _tif(d / "zscans" / "a.tif", _with_nan((29, 32, 32)), metadata={"axes": "ZYX"})
    _tif(d / "zscans" / "b.tif", _rand((29, 32, 32)), metadata={"axes": "ZYX"})
    _tif(d / "infocus" / "f.tif", _rand((64, 64)), metadata={"axes": "YX"})
    return [d / "zscans", d / "infocus"], ["NaN"]


def _disentangled_nan(d: Path):
    _tif(d / "series" / "a.tif", _rand((5, 32, 32)), metadata={"axes": "ZYX"})
    _tif(d / "series" / "b.tif", _with_nan((5, 32, 32)), metadata={"axes": "ZYX"})
    return [d / "series"], ["NaN"]


@pytest.mark.parametrize("method,make", [
    ("isonet", _isonet_nan), ("isonet", _isonet_truncated), ("dqlr", _dqlr_nan),
    ("dqlr", _dqlr_truncated), ("zsegan", _zsegan_nan), ("disentangled", _disentangled_nan)],
    ids=["isonet-nan", "isonet-truncated", "dqlr-nan", "dqlr-truncated", "zsegan-nan",
         "disentangled-nan"])
def test_overwrite_with_bad_input_keeps_the_old_run(tmp_path, method, make):
    inputs, needles = make(tmp_path / "in")
    run = _fake_run(tmp_path / "run")
    before = _digest(run, *inputs)
    res = _cli("train", method, *inputs, run, "--overwrite", "--threads", "1")
    clean_failure(res, *needles)
    assert _digest(run, *inputs) == before  # model.pt, last.pt, best.pt, history, run.json
    assert not _temps(tmp_path) and not _temps(run)


def test_overwrite_replaces_the_run_when_complete_and_keeps_other_files(tiny_run, stack):
    old = _digest(tiny_run)
    res = _cli("train", "isonet", stack, tiny_run, *TINY_CLI, "--overwrite", "--seed", "7")
    ok(res)
    new = _digest(tiny_run)
    assert new[str(tiny_run / "model.pt")] != old[str(tiny_run / "model.pt")]
    assert (tiny_run / "notes.txt").read_text() == "the user's own notes"
    info = json.loads((tiny_run / "run.json").read_text())
    assert info["status"] == "trained" and info["settings"]["seed"] == 7
    assert not _temps(tiny_run.parent) and not _temps(tiny_run)
    ok(_cli("train", "isonet", stack, tiny_run, "--resume", "--epochs", "2"))  # resume in place
    assert len(json.loads((tiny_run / "history.json").read_text())["history"]) == 2
    assert not _temps(tiny_run.parent)


def _sharpstack():
    return shutil.which("sharpstack") or str(Path(sys.executable).parent / "sharpstack")


def test_killed_overwrite_keeps_the_old_run_and_the_next_run_cleans_up(tiny_run, stack):
    before = _digest(tiny_run)
    parent = tiny_run.parent
    proc = subprocess.Popen(
        [_sharpstack(), "train", "isonet", str(stack), str(tiny_run), "--overwrite",
         "--epochs", "200", "--steps-per-epoch", "2", "--patches", "16", "--patch-size", "32",
         "--batch-size", "4", "--dropout", "0", "--threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "SHARPSTACK_TEST_THREADS": "1"})
    killed = False
    try:
        t0 = time.time()
        while proc.poll() is None and time.time() - t0 < 240:
            if any((t / "last.pt").exists() for t in _temps(parent)):  # the new run trains
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed = True
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert killed
    assert _digest(tiny_run) == before  # model.pt and everything else still the old run's
    assert _temps(parent)  # the killed run's folder, recognisable by its name ...
    res = _cli("train", "isonet", stack, tiny_run, *TINY_CLI, "--overwrite")
    ok(res)
    assert not _temps(parent)  # ... removed by the next run
    assert _digest(tiny_run)[str(tiny_run / "model.pt")] != before[str(tiny_run / "model.pt")]


def test_run_replaced_when_a_kill_came_between_the_renames_is_put_back(tiny_run, stack):
    """A kill between the swap's two renames leaves the old run under a temporary name: the
    next command that reads or writes the run puts it back."""
    from sharpstack._files import OLD_PREFIX

    before = _digest(tiny_run)
    moved = tiny_run.with_name(f"{OLD_PREFIX}999999999-0123abcd-{tiny_run.name}")  # dead pid
    os.replace(tiny_run, moved)
    from sharpstack.workflows import load_run

    assert load_run(tiny_run).path == tiny_run
    assert {k.replace(str(moved), str(tiny_run)): v for k, v in _digest(tiny_run).items()} \
        == before
    assert not _temps(tiny_run.parent)


# ------------------------------------------------------------------------------------------
# item 6: promised messages instead of crashes
# ------------------------------------------------------------------------------------------

def test_export_into_a_folder_that_does_not_exist_creates_it(isonet_run, stack, tmp_path):
    dest = tmp_path / "new" / "deeper" / "pkg.zip"
    ok(_cli("export", isonet_run[0], stack, dest, "--deployable", "upsample"))
    assert dest.is_file() and not _temps(dest.parent)


def test_failed_export_into_a_new_folder_leaves_no_folder(isonet_run, tmp_path):
    flat = _tif(tmp_path / "plane.tif", _rand((64, 64)))
    dest = tmp_path / "new" / "deeper" / "pkg.zip"
    res = _cli("export", isonet_run[0], flat, dest)
    clean_failure(res, "plane.tif")
    assert not (tmp_path / "new").exists()


def test_zoo_out_an_existing_file_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("id: tiny\nname: tiny\nmethod: isonet\n"
                      "data: {synth: {shape: [32, 32, 32], factor: 4}}\n")
    f = tmp_path / "built"
    f.write_bytes(b"keep me")
    res = _cli("zoo", recipe, "--out", f)
    clean_failure(res, str(f), "is a file", "--out")
    assert f.read_bytes() == b"keep me" and not _temps(tmp_path)


# ------------------------------------------------------------------------------------------
# item 7: wrong input refused instead of accepted
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tile", ["16,64,64,64", "16,64", "1,2,3,4,5", "16,,64"])
def test_tile_with_extra_or_missing_values_is_refused(tmp_path, tile):
    src = _stack_tif(tmp_path / "s.tif", _rand((8, 32, 32)))
    out = tmp_path / "out.tif"
    res = _cli("predict", tmp_path / "any.zip", src, out, "--tile", tile)
    clean_failure(res, "--tile", "Z,Y,X", "one number")
    assert not out.exists() and not _temps(tmp_path)


def test_tile_with_one_or_three_values_is_read_as_before():
    from sharpstack.cli import _tile

    assert _tile("16") == 16 and _tile(None) is None
    assert _tile("16,64,32") == {"z": 16, "y": 64, "x": 32}
    assert _tile("16x64x32") == {"z": 16, "y": 64, "x": 32}


_TINY_FLAGS = {
    "isonet": TINY_CLI,
    "dqlr": ["--patch-size", "16", "--down", "1", "--epochs", "1", "--threads", "1"],
    "zsegan": ["--crop", "16", "--ngf", "2", "--res-blocks", "1", "--ndf", "4", "--d-layers",
               "3", "--sections", "2", "--epochs", "1", "--steps-per-epoch", "1",
               "--val-count", "1", "--threads", "1"],
    "disentangled": ["--focus-plane", "3", "--channels", "4,8", "--id-channels", "8",
                     "--patch-size", "32", "--epochs", "1", "--steps-per-epoch", "1",
                     "--threads", "1"],
}


def _constant_isonet(d, value):
    return [_stack_tif(d / "flat.tif", np.full((16, 64, 64), value, np.float32))]


@pytest.mark.parametrize("method,make,needle", [
    ("isonet", lambda d: _constant_isonet(d, 0.0), "all zero"),
    ("isonet", lambda d: _constant_isonet(d, 7.0), "constant"),
    ("dqlr", lambda d: [_tif(d / "flat.tif", np.zeros((12, 64, 64), np.float32),
                             metadata={"axes": "ZYX"})], "constant"),
    ("zsegan", lambda d: [_tif(d / "z" / "a.tif", np.zeros((29, 32, 32), np.float32),
                               metadata={"axes": "ZYX"}).parent,
                          _tif(d / "f" / "f.tif", _rand((64, 64)),
                               metadata={"axes": "YX"}).parent,
                          _tif(d / "z" / "b.tif", _rand((29, 32, 32)),
                               metadata={"axes": "ZYX"})][:2], "all zero"),
    ("disentangled", lambda d: [[_tif(d / "s" / f"{i}.tif", _rand((5, 32, 32), i),
                                      metadata={"axes": "ZYX"}) for i in range(4)][0].parent,
                                _tif(d / "s" / "9.tif", np.full((5, 32, 32), 3, np.float32),
                                     metadata={"axes": "ZYX"})][:1], "constant"),
], ids=["isonet-zero", "isonet-constant", "dqlr-zero", "zsegan-zero", "disentangled-constant"])
def test_training_on_a_constant_stack_is_refused(tmp_path, method, make, needle):
    inputs = make(tmp_path / "in")
    run = tmp_path / "run"
    before = _digest(*inputs)
    res = _cli("train", method, *inputs, run, *_TINY_FLAGS[method])
    clean_failure(res, needle)
    assert _digest(*inputs) == before
    assert not run.exists() and not _temps(tmp_path)


def _ome_zarr_with_scale(path: Path, scale) -> Path:
    from sharpstack.io import as_dataarray, write_ome_zarr

    a = as_dataarray(_rand((16, 64, 64)), "ZYX", {"z": 1.6, "y": 0.2, "x": 0.2})
    p = write_ome_zarr(path, a, chunks={"z": 8, "y": 32, "x": 32})
    attrs = json.loads((p / ".zattrs").read_text())
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = scale
    (p / ".zattrs").write_text(json.dumps(attrs))
    return p


@pytest.mark.parametrize("scale,axis,value", [([-1.6, 0.2, 0.2], "z", "-1.6"),
                                              ([1.6, 0.0, 0.2], "y", "0")])
def test_ome_zarr_with_a_zero_or_negative_scale_is_refused(tmp_path, scale, axis, value):
    src = _ome_zarr_with_scale(tmp_path / "broken.ome.zarr", scale)
    before = _digest(src)
    res = _cli("train", "isonet", src, tmp_path / "run", *TINY_CLI)
    clean_failure(res, "broken.ome.zarr", f"{axis} {value}", "--voxel-size", f"{axis}=")
    assert _digest(src) == before and not (tmp_path / "run").exists()


def test_ome_zarr_with_a_negative_scale_takes_the_size_from_voxel_size(tmp_path):
    from sharpstack.io import read_stack, with_voxel_size

    src = _ome_zarr_with_scale(tmp_path / "broken.ome.zarr", [-1.6, 0.2, 0.2])
    data = read_stack(src)
    assert "z" not in data.attrs["voxel_size"]  # never a size taken from a broken scale
    fixed = with_voxel_size(data, {"z": 1.6})
    assert fixed.attrs["voxel_size"] == pytest.approx({"z": 1.6, "y": 0.2, "x": 0.2})
    assert fixed.attrs["voxel_size_source"]["z"] == "given"
    assert "voxel_size_invalid" not in fixed.attrs


def test_predict_on_an_ome_zarr_with_a_negative_scale_needs_voxel_size(package_upsample,
                                                                       tmp_path):
    from sharpstack.io import read_stack

    src = _ome_zarr_with_scale(tmp_path / "broken.ome.zarr", [-1.6, 0.2, 0.2])
    out = tmp_path / "out.tif"
    res = _cli("predict", package_upsample, src, out)
    clean_failure(res, "broken.ome.zarr", "z -1.6", "--voxel-size z=")
    assert not out.exists() and not _temps(tmp_path)
    ok(_cli("predict", package_upsample, src, out, "--voxel-size", "z=1.6"))
    assert read_stack(out).attrs["voxel_size"] == pytest.approx({"z": 0.2, "y": 0.2, "x": 0.2})


# ------------------------------------------------------------------------------------------
# item 10: messages reaching a CLI user name a command-line remedy, not Python
# ------------------------------------------------------------------------------------------

def _no_python_remedy(res):
    first = res.output.split("error:")[1]
    head = first.split("(in Python")[0]  # a Python hint may follow the CLI remedy
    for python_only in ("isel(", "pass axes=", "give axes=", ".rename("):
        assert python_only not in head, res.output


def test_cli_messages_name_a_command_line_remedy_for_time_series(tmp_path):
    src = _tif(tmp_path / "movie.tif", _rand((3, 8, 64, 64)), resolution=(5.0, 5.0),
               metadata={"axes": "TZYX", "unit": "um", "spacing": 1.6})
    res = _cli("train", "isonet", src, tmp_path / "run", *TINY_CLI)
    clean_failure(res, "movie.tif", "Fiji", "Duplicate")
    _no_python_remedy(res)
    for method in ("dqlr", "disentangled"):
        folder = tmp_path / method
        folder.mkdir()
        shutil.copyfile(src, folder / "movie.tif")
        res = _cli("train", method, folder, tmp_path / f"run_{method}", "--threads", "1")
        clean_failure(res, "movie.tif", "Fiji")
        _no_python_remedy(res)


def test_cli_messages_name_a_command_line_remedy_for_npy_without_axes(tmp_path):
    src = tmp_path / "four.npy"
    np.save(src, _rand((2, 8, 64, 64)))
    res = _cli("train", "isonet", src, tmp_path / "run", *TINY_CLI)
    clean_failure(res, "four.npy", "TIFF or OME-Zarr")
    _no_python_remedy(res)


def test_2d_npy_reads_as_yx(tmp_path):
    from sharpstack.io import read_stack

    np.save(tmp_path / "plane.npy", _rand((16, 24)))
    assert read_stack(tmp_path / "plane.npy").dims == ("y", "x")


def test_predict_messages_name_a_command_line_remedy(package_upsample, tmp_path):
    src = _tif(tmp_path / "movie.tif", _rand((2, 8, 64, 64)), resolution=(5.0, 5.0),
               metadata={"axes": "TZYX", "unit": "um", "spacing": 1.6})
    out = tmp_path / "out.tif"
    res = _cli("predict", package_upsample, src, out)
    clean_failure(res, "movie.tif", "Fiji", "Duplicate")
    _no_python_remedy(res)
    src = _tif(tmp_path / "two.tif", _rand((8, 2, 64, 64)), resolution=(5.0, 5.0),
               metadata={"axes": "ZCYX", "unit": "um", "spacing": 1.6})
    res = _cli("predict", package_upsample, src, out)
    clean_failure(res, "two.tif", "Split Channels")
    _no_python_remedy(res)
    assert not out.exists()
