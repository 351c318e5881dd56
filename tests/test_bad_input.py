"""Bad input, hostile files and kills, tried as a new user (or a stranger's package) would.

Every case asserts: the exit code, one message naming the problem and the fix, no traceback,
no partial output and no temporary file left, and every input's bytes unchanged. Malicious
fixtures (a package whose architecture writes a marker at import, run folders with pickle
payloads) are built here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from typer.testing import CliRunner

from sharpstack.cli import app

from ._cli import clean_failure as _clean_failure

runner = CliRunner()
TINY_CLI = ["--epochs", "1", "--steps-per-epoch", "2", "--patches", "16", "--patch-size", "32",
            "--batch-size", "4", "--dropout", "0"]


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
    return [p for p in Path(folder).rglob(".sharpstack-*")]


@pytest.fixture
def stack(tmp_path, synth_data):
    """A private copy of the tiny calibrated anisotropic stack (ZYX, z 1.6 µm, xy 0.2 µm)."""
    p = tmp_path / "in" / "stack.tif"
    p.parent.mkdir()
    shutil.copyfile(synth_data["paths"]["anisotropic"], p)
    return p


# ------------------------------------------------------------------------------------------
# stacks and numbers given to train / synth
# ------------------------------------------------------------------------------------------

def _tif(path, array, **meta):
    tifffile.imwrite(path, array, imagej=True, **meta)
    return path


@pytest.mark.parametrize("case,make,needles", [
    ("2d", lambda p: _tif(p, np.zeros((64, 64), np.float32)), ["ZYX"]),
    ("bool", lambda p: np.save(p.with_suffix(".npy"), np.zeros((8, 64, 64), bool))
     or p.with_suffix(".npy"), ["bool"]),
    ("nan", lambda p: _tif(p, np.where(np.arange(8 * 64 * 64).reshape(8, 64, 64) == 5, np.nan,
                                       1.0).astype(np.float32), metadata={"axes": "ZYX"}),
     ["NaN"]),
    ("corrupt", lambda p: (p.write_bytes(b"II*\x00" + bytes(range(256)) * 4), p)[1],
     ["stack.tif"]),
    ("uncalibrated", lambda p: _tif(p, np.random.default_rng(0).random((8, 64, 64))
                                    .astype(np.float32), metadata={"axes": "ZYX"}),
     ["unknown", "--voxel-size", "--factor"]),
])
def test_train_refuses_unusable_stacks(tmp_path, case, make, needles):
    src = make(tmp_path / "stack.tif")
    src = Path(src)
    before = _digest(src)
    out = tmp_path / "run"
    res = _cli("train", "isonet", src, out, *TINY_CLI)
    _clean_failure(res, *needles)
    assert _digest(src) == before
    assert not (out / "model.pt").exists() and not _temps(tmp_path)


@pytest.mark.parametrize("args,needles", [
    (["--factor", "0"], ["--factor"]),
    (["--patch-size", "20"], ["--patch-size", "multiple of 16"]),
    (["--lr", "-1"], ["--lr"]),
    (["--mode", "sideways"], ["--mode"]),
    (["--threads", "-2"], ["--threads"]),
    (["--voxel-size", "1,2"], ["--voxel-size"]),
    (["--voxel-size", "0,0.2,0.2"], ["--voxel-size", "positive"]),
])
def test_train_refuses_bad_values_before_any_work(stack, tmp_path, args, needles):
    out = tmp_path / "run"
    res = _cli("train", "isonet", stack, out, *TINY_CLI, *args)
    _clean_failure(res, *needles)
    assert not out.exists() or not any(out.iterdir())


def test_unknown_method_suggests(stack, tmp_path):
    res = _cli("train", "isonett", stack, tmp_path / "run")
    assert res.exit_code != 0 and "Traceback" not in res.output
    res = _cli("demo", "isonett", "--out", tmp_path / "d")
    _clean_failure(res, "isonet")
    assert not (tmp_path / "d").exists()


def test_uncalibrated_z_trains_with_voxel_size_and_records_it(tmp_path):
    """The issue-13 story: lateral 0.24 µm known, z unknown -> a clear stop; with
    --voxel-size the factor comes from the given z and the run records what was used."""
    from sharpstack.workflows import load_run

    src = tmp_path / "confocal.tif"
    data = np.random.default_rng(1).random((12, 64, 64)).astype(np.float32)
    tifffile.imwrite(src, data, imagej=True, resolution=(1 / 0.24, 1 / 0.24),
                     metadata={"axes": "ZYX", "unit": "um"})
    res = _cli("train", "isonet", src, tmp_path / "run", *TINY_CLI)
    _clean_failure(res, "z voxel size", "unknown", "--voxel-size")
    res = _cli("train", "isonet", src, tmp_path / "run", *TINY_CLI, "--voxel-size",
               "0.96,0.24,0.24")
    assert res.exit_code == 0, res.output
    assert "0.96" in res.output  # what was used is printed
    loaded = load_run(tmp_path / "run")
    assert loaded.model.config.factor == 4
    assert "z 0.96 µm (given)" in loaded.trained.record["training_data"]


def test_synth_refuses_bad_numbers(tmp_path):
    for args, needle in ((["--factor", "0"], "--factor"), (["--shape", "8"], "shape"),
                         (["--shape", "30,32,32", "--factor", "4"], "multiple"),
                         (["--kind", "blobs"], "--kind")):
        res = _cli("synth", "isonet", tmp_path / "s", *args)
        _clean_failure(res, needle)
    assert not (tmp_path / "s").exists()


def test_synth_into_a_file_is_refused(tmp_path):
    f = tmp_path / "afile"
    f.write_bytes(b"keep")
    res = _cli("synth", "isonet", f, "--shape", "32", "--factor", "4")
    # a user mistake: exit 2 with a message naming the file, not an "unexpected error"
    _clean_failure(res, "is a file, not a folder")
    assert f.read_bytes() == b"keep"
    # a folder below that file: the operating system refuses, the CLI says why in one line
    res = _cli("synth", "isonet", f / "sub", "--shape", "32", "--factor", "4")
    _clean_failure(res, "cannot write", str(f))
    assert f.read_bytes() == b"keep"


# ------------------------------------------------------------------------------------------
# run folders: resume, overwrite, hostile files
# ------------------------------------------------------------------------------------------

@pytest.fixture
def tiny_run(stack, tmp_path):
    run = tmp_path / "run"
    res = _cli("train", "isonet", stack, run, *TINY_CLI)
    assert res.exit_code == 0, res.output
    return run


def test_existing_run_is_not_overwritten(tiny_run, stack):
    before = _digest(tiny_run)
    res = _cli("train", "isonet", stack, tiny_run, *TINY_CLI)
    _clean_failure(res, "already exist", "--overwrite")
    assert _digest(tiny_run) == before


@pytest.mark.parametrize("args,needles", [
    (["--arch", "srcnn"], ["arch", "other settings"]),
    (["--patch-size", "16"], ["patch_size", "other settings"]),
])
def test_resume_with_other_settings_is_refused(tiny_run, stack, args, needles):
    before = _digest(tiny_run)
    res = _cli("train", "isonet", stack, tiny_run, "--epochs", "2", "--resume", *args)
    _clean_failure(res, *needles)
    assert _digest(tiny_run) == before


def test_resume_with_another_stack_is_refused(tiny_run, tmp_path, synth_data):
    other = tmp_path / "other.tif"
    a = tifffile.imread(synth_data["paths"]["anisotropic"])
    tifffile.imwrite(other, a[:, :48, :48], imagej=True, resolution=(5, 5),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 1.6})
    before = _digest(tiny_run)
    res = _cli("train", "isonet", other, tiny_run, "--epochs", "2", "--resume")
    _clean_failure(res, "other settings", "data")
    assert _digest(tiny_run) == before


def test_resume_another_method_run_is_refused(tiny_run, stack):
    import json

    info = json.loads((tiny_run / "run.json").read_text())
    assert info["method"] == "isonet"
    res = _cli("train", "isonet", stack, tiny_run, "--resume", "--epochs", "2")
    assert res.exit_code == 0, res.output  # the same method resumes


def test_run_inside_its_input_folder_is_refused(stack):
    res = _cli("train", "isonet", stack, stack.parent, *TINY_CLI)
    _clean_failure(res, "inside", "input")
    res = _cli("train", "isonet", stack, stack, *TINY_CLI)
    _clean_failure(res)
    assert stack.is_file()


class _Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("member", ["model.pt", "last.pt"])
def test_pickle_payload_in_a_run_folder_never_runs(tiny_run, stack, tmp_path, member):
    marker = tmp_path / "PWNED"
    torch.save({"models": _Payload(marker)}, tiny_run / member)
    if member == "model.pt":
        res = _cli("export", tiny_run, stack, tmp_path / "p.zip")
    else:
        res = _cli("train", "isonet", stack, tiny_run, "--epochs", "2", "--resume")
    _clean_failure(res, member)
    assert not marker.exists()
    assert not (tmp_path / "p.zip").exists()


def test_run_folder_without_record(tmp_path, stack):
    bad = tmp_path / "notarun"
    bad.mkdir()
    (bad / "model.pt").write_bytes(b"junk")
    res = _cli("export", bad, stack, tmp_path / "p.zip")
    _clean_failure(res, "run.json")
    (bad / "run.json").write_text("{not json")
    res = _cli("export", bad, stack, tmp_path / "p.zip")
    _clean_failure(res, "run.json")
    assert not (tmp_path / "p.zip").exists()


# ------------------------------------------------------------------------------------------
# export: destinations that would destroy inputs, bad values, kills
# ------------------------------------------------------------------------------------------

def test_export_over_the_run_folder_or_the_stack_folder_is_refused(isonet_run, stack, tmp_path):
    run = tmp_path / "myrun"
    shutil.copytree(isonet_run[0], run)
    before = _digest(run, stack)
    for dest in (run, stack.parent, run / "inside"):
        res = _cli("export", run, stack, dest, "--as-folder", "--overwrite")
        _clean_failure(res, "input")
    assert _digest(run, stack) == before


def test_export_bad_values(isonet_run, stack, tmp_path):
    run = isonet_run[0]
    res = _cli("export", run, stack, tmp_path / "p.tar")
    _clean_failure(res, ".zip")
    res = _cli("export", run, stack, tmp_path / "p.zip", "--deployable", "sideways")
    _clean_failure(res, "upsample", "isotropic")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    res = _cli("export", run, stack, blocker / "sub" / "p.zip")
    _clean_failure(res, "a_file")
    res = _cli("export", run, tmp_path / "missing.tif", tmp_path / "p.zip")
    _clean_failure(res, "missing.tif")
    assert not (tmp_path / "p.zip").exists() and not _temps(tmp_path)


def _sharpstack():
    return shutil.which("sharpstack") or str(Path(sys.executable).parent / "sharpstack")


def _kill_when(cmd, cond, timeout=240.0, env=None):
    """Start ``cmd``, SIGKILL it as soon as ``cond()`` holds; return whether it was killed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "SHARPSTACK_TEST_THREADS": "1", **(env or {})})
    t0 = time.time()
    try:
        while proc.poll() is None and time.time() - t0 < timeout:
            if cond():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return False


def test_killed_export_overwrite_keeps_the_old_package(package_upsample, isonet_run, stack,
                                                       tmp_path):
    """SIGKILL while a replacing export is testing its new package: the old package is
    intact; the next export to the same path removes the debris and replaces it."""
    dest = tmp_path / "out" / "pkg.zip"
    dest.parent.mkdir()
    shutil.copyfile(package_upsample, dest)
    before = _digest(dest, stack, isonet_run[0])
    killed = _kill_when([_sharpstack(), "export", str(isonet_run[0]), str(stack), str(dest),
                         "--overwrite"],
                        lambda: any((p / "package.zip").exists() or (p / "stage.zip").exists()
                                    for p in _temps(dest.parent) if p.is_dir()))
    assert killed
    assert _digest(dest, stack, isonet_run[0]) == before
    assert _temps(dest.parent)  # the kill left its work folder ...
    res = _cli("export", isonet_run[0], stack, dest, "--overwrite", "--deployable", "upsample")
    assert res.exit_code == 0, res.output
    assert not _temps(dest.parent)  # ... which the next run cleaned
    with zipfile.ZipFile(dest) as z:
        assert "rdf.yaml" in z.namelist()


def test_sigterm_during_export_leaves_nothing(isonet_run, stack, tmp_path):
    dest = tmp_path / "out" / "pkg.zip"
    dest.parent.mkdir()
    proc = subprocess.Popen([_sharpstack(), "export", str(isonet_run[0]), str(stack), str(dest)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while not _temps(dest.parent) and time.time() - t0 < 120 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in out, out
    assert not dest.exists() and not _temps(dest.parent)


def test_killed_training_resumes_and_leaves_no_half_files(stack, tmp_path):
    run = tmp_path / "run"
    killed = _kill_when([_sharpstack(), "train", "isonet", str(stack), str(run), "--epochs", "50",
                         "--steps-per-epoch", "2", "--patches", "16", "--patch-size", "32",
                         "--batch-size", "4", "--dropout", "0", "--threads", "1"],
                        lambda: (run / "last.pt").exists())
    assert killed
    assert not (run / "model.pt").exists()  # no final model from a killed run
    res = _cli("export", run, stack, tmp_path / "p.zip")
    _clean_failure(res, "unfinished", "--resume")
    res = _cli("train", "isonet", stack, run, "--resume", "--epochs", "2")
    assert res.exit_code == 0, res.output
    assert (run / "model.pt").exists() and not _temps(run)


# ------------------------------------------------------------------------------------------
# packages from strangers
# ------------------------------------------------------------------------------------------

def _extract(pkg, dest) -> Path:
    dest.mkdir()
    if Path(pkg).is_dir():
        shutil.copytree(pkg, dest, dirs_exist_ok=True)
    else:
        with zipfile.ZipFile(pkg) as z:
            z.extractall(dest)
    return dest


def _rewrite_rdf(folder: Path, edit) -> None:
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    edit(rdf)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))


@pytest.fixture
def hostile_package(package_isotropic, tmp_path):
    """State-dict-only package whose architecture file writes a marker when imported."""
    folder = _extract(package_isotropic, tmp_path / "hostile")
    marker = tmp_path / "MARKER"
    arch_name = "isonet_arch.py"
    src = (folder / arch_name).read_text()
    head, sep, rest = src.partition("from __future__ import annotations\n")
    evil = head + sep + f"from pathlib import Path as _P\n_P({str(marker)!r}).touch()\n" + rest
    (folder / arch_name).write_text(evil)

    def edit(rdf):
        w = rdf["weights"]
        del w["torchscript"], w["onnx"]
        w["pytorch_state_dict"]["architecture"]["sha256"] = hashlib.sha256(
            evil.encode()).hexdigest()
    _rewrite_rdf(folder, edit)
    return folder, marker


def test_hostile_architecture_never_runs_without_trust_code(hostile_package, synth_data,
                                                            tmp_path):
    folder, marker = hostile_package
    before = _digest(folder)
    res = _cli("validate", folder)
    _clean_failure(res, "--trust-code", "pytorch_state_dict")
    res = _cli("check", folder, "--for", "bioimageio", "--test")
    assert not marker.exists() and "--trust-code" in res.output
    assert _digest(folder) == before
    res = _cli("validate", folder, "--trust-code")
    assert marker.exists(), res.output  # with the flag the package's code runs, as asked


def test_validate_odd_packages(package_isotropic, tmp_path):
    # a folder whose rdf has another name: named, and nothing is looked up online
    f1 = _extract(package_isotropic, tmp_path / "renamed")
    (f1 / "rdf.yaml").rename(f1 / "model.yaml")
    res = _cli("validate", f1)
    _clean_failure(res, "model.yaml")
    # a non-YAML rdf
    f2 = _extract(package_isotropic, tmp_path / "broken")
    (f2 / "rdf.yaml").write_text("weights: [unclosed\n  : :")
    res = _cli("validate", f2)
    _clean_failure(res, "yaml")
    # a package lacking one weight format: what it has is tested
    f3 = _extract(package_isotropic, tmp_path / "noonnx")
    _rewrite_rdf(f3, lambda rdf: rdf["weights"].pop("onnx"))
    res = _cli("validate", f3, "--weight-format", "onnx")
    _clean_failure(res, "no onnx", "torchscript")
    res = _cli("validate", f3)
    assert res.exit_code == 0 and "onnx" not in res.output.split("tested offline:")[1].split(
        "\n")[0], res.output


def test_zoo_recipe_types(tmp_path):
    for text, needle in (("- a\n- list\n", "mapping"), ("id: x\nname: x\nmethod: nope\n"
                                                        "data: {synth: {}}\n", "unknown method"),
                         ("id: x\nname: x\nmethod: isonet\ndata: {synth: {factor: 0}}\n",
                          "factor"), (":\n  - ][", "yaml")):
        p = tmp_path / "r.yaml"
        p.write_text(text)
        res = _cli("zoo", p, "--out", tmp_path / "built")
        _clean_failure(res, needle)
    assert not (tmp_path / "built").exists() or not any((tmp_path / "built").iterdir())


def test_unexpected_errors_give_a_log_not_a_traceback(monkeypatch, tmp_path, stack):
    import sharpstack.workflows as wf

    def boom(*a, **k):
        raise RuntimeError("simulated internal failure")
    monkeypatch.setattr(wf, "train_run", boom)
    res = _cli("train", "isonet", stack, tmp_path / "run")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "simulated internal failure" in res.output and "--debug" in res.output
    log = Path(res.output.split("details are in ")[1].split(";")[0])
    assert "RuntimeError" in log.read_text()
    log.unlink()


def _zarr_copy(tmp_path, name, edit):
    import json

    from sharpstack.io import as_dataarray, write_ome_zarr

    a = as_dataarray(np.random.default_rng(0).random((16, 64, 64)).astype(np.float32), "ZYX",
                     {"z": 1.6, "y": 0.2, "x": 0.2})
    p = write_ome_zarr(tmp_path / name, a, chunks={"z": 8, "y": 32, "x": 32})
    edit(p, json)
    return p


def test_damaged_ome_zarr_inputs(tmp_path):
    def bad_scale(p, json):
        z = json.loads((p / ".zattrs").read_text())
        z["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = ["a"] * 3
        (p / ".zattrs").write_text(json.dumps(z))

    def bad_chunk(p, json):
        chunk = next(f for f in sorted((p / "0").rglob("*")) if f.is_file()
                     and not f.name.startswith("."))
        chunk.write_bytes(b"garbage" * 10)

    for name, edit, needle in (("scale.ome.zarr", bad_scale, "scale"),
                               ("chunk.ome.zarr", bad_chunk, "damaged")):
        src = _zarr_copy(tmp_path, name, edit)
        before = _digest(src)
        res = _cli("train", "isonet", src, tmp_path / "run", *TINY_CLI)
        _clean_failure(res, needle, name)
        assert _digest(src) == before and not (tmp_path / "run").exists()


def test_zip_members_escaping_the_package_go_nowhere(package_isotropic, tmp_path):
    folder = _extract(package_isotropic, tmp_path / "pkg")
    evil = tmp_path / "work" / "evil.zip"
    evil.parent.mkdir()
    with zipfile.ZipFile(evil, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(folder).as_posix())
        z.writestr("../../escaped.txt", "out of the package")
        z.writestr("/tmp/absolute-escaped.txt", "out of the package")
    _cli("validate", evil, "--weight-format", "torchscript")
    _cli("check", evil)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (tmp_path.parent / "escaped.txt").exists()
    assert not Path("/tmp/absolute-escaped.txt").exists()
