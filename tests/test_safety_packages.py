"""Issue 17, "right output or no output": hostile and damaged packages, resume fingerprints,
crashes that must be one clear message, folder replacement that survives a kill, debris of
killed runs, and vague messages about packages.

Each test is named after its scenario; the packages are variants of the tiny session
``package_isotropic`` (a folder), built here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from sharpstack.cli import app

from ._cli import clean_failure, ok, runner


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _digest(path) -> dict[str, str]:
    p = Path(path)
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    return {str(f.relative_to(p) if p.is_dir() else f.name):
            hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _temps(folder) -> list[Path]:
    return list(Path(folder).rglob(".sharpstack-*"))


def _copy(pkg, dest: Path) -> Path:
    shutil.copytree(pkg, dest)
    return dest


def _edit_rdf(folder: Path, edit) -> None:
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    edit(rdf)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))


def _zip(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(folder).as_posix())
    return dest


@pytest.fixture
def stack(tmp_path, package_isotropic):
    """The package's own sample input (64^3 float32) as a private input file."""
    p = tmp_path / "in" / "stack.tif"
    p.parent.mkdir()
    shutil.copyfile(Path(package_isotropic) / "sample_input.tif", p)
    return p


def _second_description(package_isotropic, tmp_path) -> tuple[Path, Path]:
    """The package plus ``a.rdf.yaml``: state-dict only, architecture ``evil_arch.py`` that
    writes a marker when imported. bioimageio.spec loads ``a.rdf.yaml`` (first sorted)."""
    folder = _copy(package_isotropic, tmp_path / "two_rdfs")
    marker = tmp_path / "MARKER"
    src = (folder / "isonet_arch.py").read_text()
    head, sep, rest = src.partition("from __future__ import annotations\n")
    evil = head + sep + f"from pathlib import Path as _P\n_P({str(marker)!r}).touch()\n" + rest
    (folder / "evil_arch.py").write_text(evil)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    w = rdf["weights"]
    del w["torchscript"], w["onnx"]
    w["pytorch_state_dict"]["architecture"]["source"] = "evil_arch.py"
    w["pytorch_state_dict"]["architecture"]["sha256"] = hashlib.sha256(evil.encode()).hexdigest()
    (folder / "a.rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder, marker


# ------------------------------------------------------------------------------------------
# 1. code run through a second description
# ------------------------------------------------------------------------------------------

def test_second_rdf_in_a_package_folder_never_runs_its_code(package_isotropic, stack, tmp_path):
    folder, marker = _second_description(package_isotropic, tmp_path)
    before = _digest(folder)
    out = tmp_path / "out.tif"
    clean_failure(_cli("predict", folder, stack, out), "a.rdf.yaml", "rdf.yaml")
    clean_failure(_cli("check", folder, "--for", "bioimageio", "--test"), "a.rdf.yaml")
    clean_failure(_cli("validate", folder), "a.rdf.yaml")
    assert not marker.exists() and not out.exists() and not _temps(tmp_path)
    assert _digest(folder) == before


def test_second_rdf_in_a_package_zip_never_runs_its_code(package_isotropic, stack, tmp_path):
    folder, marker = _second_description(package_isotropic, tmp_path)
    pkg = _zip(folder, tmp_path / "two_rdfs.zip")
    clean_failure(_cli("predict", pkg, stack, tmp_path / "out.tif"), "a.rdf.yaml")
    clean_failure(_cli("check", pkg, "--for", "bioimageio", "--test"), "a.rdf.yaml")
    clean_failure(_cli("validate", pkg), "a.rdf.yaml")
    assert not marker.exists()


def test_trust_is_decided_on_the_description_that_runs(package_isotropic, tmp_path):
    """The loaded description itself is checked: sharpstack's own architecture may run, a
    stranger's file may not (whatever the folder's rdf.yaml says)."""
    from sharpstack._trust import descr_code
    from sharpstack.predict import load_model
    from sharpstack.predict.job import state_dict_refusal as _code_reason

    own = load_model(package_isotropic)
    assert not descr_code(own).runs_package_code and _code_reason(own, False) is None
    folder, marker = _second_description(package_isotropic, tmp_path)
    (folder / "rdf.yaml").unlink()  # a.rdf.yaml is now the one description
    foreign = load_model(folder / "a.rdf.yaml")
    reason = _code_reason(foreign, False)
    assert reason and "evil_arch.py" in reason and "--trust-code" in reason
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# 3, 4. resume fingerprint: the package's content and the output calibration
# ------------------------------------------------------------------------------------------

def _interrupt_after(n):
    def progress(done, total):
        if done >= n:
            raise KeyboardInterrupt()
    return progress


def _interrupted(pkg, src, dst, **kw):
    from sharpstack.predict import predict_file

    with pytest.raises(KeyboardInterrupt):
        predict_file(pkg, src, dst, tile=48, weight_format="torchscript", check=False,
                     progress=_interrupt_after(1), **kw)
    assert (dst.parent / f".sharpstack-partial-{dst.name}").is_dir()


def test_resume_after_the_package_folder_got_other_weights_is_refused(package_isotropic,
                                                                      stack, tmp_path):
    import torch

    from sharpstack.errors import InputError
    from sharpstack.predict import predict_file

    pkg = _copy(package_isotropic, tmp_path / "pkg")
    dst = tmp_path / "out.ome.zarr"
    _interrupted(pkg, stack, dst)
    # another model's weights written in place (the folder's own size and mtime unchanged)
    ts = pkg / "weights_torchscript.pt"
    module = torch.jit.load(str(ts))
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(-1.0)
    torch.jit.save(module, str(ts))
    text = (pkg / "rdf.yaml").read_text()
    old_sha = yaml.safe_load(text)["weights"]["torchscript"]["sha256"]
    (pkg / "rdf.yaml").write_text(text.replace(old_sha, hashlib.sha256(ts.read_bytes())
                                               .hexdigest()))
    with pytest.raises(InputError, match="package's content"):
        predict_file(pkg, stack, dst, tile=48, weight_format="torchscript", check=False,
                     resume=True)
    assert not dst.exists()


def test_resume_with_another_voxel_size_is_refused(package_isotropic, stack, tmp_path):
    from sharpstack.errors import InputError
    from sharpstack.io import read_stack
    from sharpstack.predict import predict_file

    dst = tmp_path / "out.ome.zarr"
    _interrupted(package_isotropic, stack, dst, voxel_size={"z": 0.5, "y": 0.5, "x": 0.5})
    with pytest.raises(InputError, match="voxel size"):
        predict_file(package_isotropic, stack, dst, tile=48, weight_format="torchscript",
                     check=False, resume=True, voxel_size={"z": 0.2, "y": 0.2, "x": 0.2})
    assert not dst.exists()
    # the same calibration resumes, and the output keeps it
    predict_file(package_isotropic, stack, dst, tile=48, weight_format="torchscript",
                 check=False, resume=True, voxel_size={"z": 0.5, "y": 0.5, "x": 0.5})
    assert read_stack(dst).attrs["voxel_size"] == pytest.approx({"z": 0.5, "y": 0.5, "x": 0.5})


def test_resume_with_another_voxel_size_cli_is_one_clear_message(package_isotropic, stack,
                                                                 tmp_path):
    dst = tmp_path / "out.ome.zarr"
    _interrupted(package_isotropic, stack, dst, voxel_size={"z": 0.5, "y": 0.5, "x": 0.5})
    res = _cli("predict", package_isotropic, stack, dst, "--resume", "--tile", "48",
               "--weight-format", "torchscript", "--no-check", "--voxel-size", "0.2,0.2,0.2")
    clean_failure(res, "voxel size", "--overwrite")


# ------------------------------------------------------------------------------------------
# 5. validate on weights that return NaN
# ------------------------------------------------------------------------------------------

def test_validate_fails_torchscript_weights_that_return_nan(package_isotropic, tmp_path):
    from sharpstack.workflows import validate_package

    pkg = _copy(package_isotropic, tmp_path / "nan")
    ts = pkg / "weights_torchscript.pt"
    with zipfile.ZipFile(ts) as z:
        items = [(i, z.read(i.filename)) for i in z.infolist()]
    with zipfile.ZipFile(ts, "w") as z:  # one weight tensor's bytes all NaN, loads fine
        for i, data in items:
            if i.filename.endswith("/data/0"):
                data = np.full(len(data) // 4, np.nan, np.float32).tobytes()
            z.writestr(i, data)
    _edit_rdf(pkg, lambda rdf: rdf["weights"]["torchscript"].update(
        sha256=hashlib.sha256(ts.read_bytes()).hexdigest()))
    passed, report = validate_package(pkg, ["torchscript"])
    assert not passed and "not finite" in report and "torchscript" in report, report
    res = _cli("validate", pkg, "--weight-format", "torchscript")
    assert res.exit_code == 1 and "not finite" in res.output and "passed:" not in res.output


# ------------------------------------------------------------------------------------------
# 6. crashes that must be one clear message
# ------------------------------------------------------------------------------------------

def test_predict_into_a_folder_that_is_a_file_is_refused(package_isotropic, stack, tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    res = _cli("predict", package_isotropic, stack, blocker / "out.tif", "--no-check")
    clean_failure(res, "is a file", "results")
    assert blocker.read_text() == "not a folder" and not _temps(tmp_path)


def test_predict_when_the_output_cannot_be_written(package_isotropic, stack, tmp_path,
                                                   monkeypatch):
    """What really fails in a read-only or full folder: creating the output file. (Root
    ignores permissions, so the failure is simulated where it happens.)"""
    import sharpstack.io as sio

    def denied(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(sio, "open_tiff_memmap", denied)
    out = tmp_path / "out" / "restored.tif"
    res = _cli("predict", package_isotropic, stack, out, "--no-check")
    clean_failure(res, "cannot write", "permission denied", "restored.tif")
    assert not out.exists() and not _temps(tmp_path)


def test_check_validate_predict_on_a_non_utf8_rdf(package_isotropic, stack, tmp_path):
    pkg = _copy(package_isotropic, tmp_path / "latin1")
    text = (pkg / "rdf.yaml").read_text()
    (pkg / "rdf.yaml").write_bytes(text.replace("name: ", "name: Caf\xe9 ", 1)
                                   .encode("latin-1"))
    clean_failure(_cli("check", pkg), "UTF-8")
    clean_failure(_cli("validate", pkg), "UTF-8")
    clean_failure(_cli("predict", pkg, stack, tmp_path / "o.tif"), "UTF-8")


def test_predict_with_a_bogus_scheduler(package_isotropic, stack, tmp_path):
    out = tmp_path / "o.ome.zarr"
    res = _cli("predict", package_isotropic, stack, out, "--scheduler", "bogus")
    clean_failure(res, "--scheduler", "bogus", "tcp://")
    assert not out.exists() and not _temps(tmp_path)


# ------------------------------------------------------------------------------------------
# 8. --overwrite of a folder killed between its renames
# ------------------------------------------------------------------------------------------

_KILL_SCRIPT = textwrap.dedent("""
    import os, sys
    import sharpstack._files as f
    from sharpstack.predict import predict_file

    mode, pkg, src, dst = sys.argv[1:5]
    real_replace = os.replace
    real_exchange = getattr(f, "_exchange", lambda a, b: False)
    if mode == "two-renames":  # no atomic exchange: killed right after the old is moved away
        f._exchange = lambda a, b: False
        def replace(a, b):
            real_replace(a, b)
            if os.path.basename(str(b)).startswith(f.OLD_PREFIX):
                os._exit(9)
        os.replace = replace
    else:  # killed right after the exchange, before the old content is removed
        def exchange(a, b):
            if real_exchange(a, b):
                os._exit(9)
            return False
        f._exchange = exchange
    predict_file(pkg, src, dst, overwrite=True, check=False, weight_format="torchscript")
    sys.exit(3)  # not reached: the kill comes first
""")


def _old_output(dst: Path) -> dict[str, str]:
    from sharpstack.io import as_dataarray, write_ome_zarr

    write_ome_zarr(dst, as_dataarray(np.full((8, 16, 16), 7, np.float32), "ZYX",
                                     {"z": 1.0, "y": 1.0, "x": 1.0}))
    return _digest(dst)


def _kill_replace(mode, pkg, src, dst) -> None:
    res = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, mode, str(pkg), str(src),
                          str(dst)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "SHARPSTACK_TEST_THREADS": "1"})
    assert res.returncode == 9, res.stdout + res.stderr


def test_overwrite_killed_between_two_renames_gives_the_old_folder_back(package_isotropic,
                                                                        stack, tmp_path):
    from sharpstack.io import read_stack

    dst = tmp_path / "out" / "restored.ome.zarr"
    dst.parent.mkdir()
    old = _old_output(dst)
    _kill_replace("two-renames", package_isotropic, stack, dst)
    assert not dst.exists()  # the instant the kill fell on: recoverable debris only
    res = _cli("predict", package_isotropic, stack, dst, "--no-check")  # a plain rerun
    clean_failure(res, "already exists", "--overwrite")
    assert _digest(dst) == old and not _temps(dst.parent)
    res = _cli("predict", package_isotropic, stack, dst, "--resume", "--no-check")
    clean_failure(res, "already exists")
    assert _digest(dst) == old
    ok(_cli("predict", package_isotropic, stack, dst, "--overwrite", "--no-check"))
    assert read_stack(dst).shape == (64, 64, 64) and not _temps(dst.parent)


def test_overwrite_killed_after_the_exchange_leaves_the_new_folder(package_isotropic, stack,
                                                                   tmp_path):
    from sharpstack.io import read_stack

    dst = tmp_path / "out" / "restored.ome.zarr"
    dst.parent.mkdir()
    _old_output(dst)
    _kill_replace("exchange", package_isotropic, stack, dst)
    assert read_stack(dst).shape == (64, 64, 64)  # the new, complete output is in place
    assert _temps(dst.parent)  # the old one under a temporary name ...
    res = _cli("predict", package_isotropic, stack, dst, "--no-check")
    clean_failure(res, "already exists")
    assert not _temps(dst.parent)  # ... removed by the next run in that folder


def test_replace_folder_is_atomic_or_recoverable(tmp_path, monkeypatch):
    """The one function behind every folder replacement (OME-Zarr outputs, export
    --as-folder): at every instant the old or the new folder is at the destination."""
    import sharpstack._files as f

    dest, new = tmp_path / "pkg", tmp_path / "candidate"
    dest.mkdir()
    (dest / "v").write_text("old")
    new.mkdir()
    (new / "v").write_text("new")
    real_replace = os.replace
    seen = []

    def watched(a, b):
        real_replace(a, b)
        seen.append(dest.is_dir())
    monkeypatch.setattr(os, "replace", watched)
    f.replace_atomically(new, dest)
    monkeypatch.setattr(os, "replace", real_replace)
    assert all(seen), "the destination was missing after a rename"
    assert (dest / "v").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["pkg"]
    # without an atomic exchange, a kill between the renames is put back by the next run
    monkeypatch.setattr(f, "_exchange", lambda a, b: False, raising=False)
    old = tmp_path / f".sharpstack-old-999999999-0123abcd-{dest.name}"  # a dead process's
    os.replace(dest, old)
    assert f.clean_stale(dest) and (dest / "v").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["pkg"]


# ------------------------------------------------------------------------------------------
# 9. debris of killed runs
# ------------------------------------------------------------------------------------------

def test_temporaries_of_dead_and_zombie_processes_are_cleaned_by_the_next_run(
        package_isotropic, stack, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    while not Path(f"/proc/{zombie.pid}/stat").read_text().rpartition(")")[2].split()[0] \
            == "Z":
        pass  # exited, not reaped: a killed export whose parent has not waited yet
    debris = [folder / f".sharpstack-tmp-{zombie.pid}-0123abcd-pkg.zip",
              folder / ".sharpstack-tmp-999999999-89abcdef-other.zip"]
    for d in debris:
        (d / "files").mkdir(parents=True)
        (d / "files" / "weights.pt").write_bytes(b"x" * 1000)
    try:
        ok(_cli("predict", package_isotropic, stack, folder / "restored.tif", "--no-check"))
    finally:
        zombie.wait()
    assert not any(d.exists() for d in debris)
    assert sorted(p.name for p in folder.iterdir()) == ["restored.tif"]


def test_partial_ome_zarr_without_its_log_does_not_block_a_rerun(package_isotropic, stack,
                                                                 tmp_path):
    from sharpstack.io import read_stack

    dst = tmp_path / "restored.ome.zarr"
    partial = tmp_path / f".sharpstack-partial-{dst.name}"
    (partial / "0").mkdir(parents=True)  # killed after creating the folder, before its log
    (partial / ".zattrs").write_text("{}")
    for args in ([], ["--resume"]):
        res = ok(_cli("predict", package_isotropic, stack, dst, "--no-check", *args))
        assert "warning:" in res.output and "nothing to resume" in res.output
        assert read_stack(dst).shape == (64, 64, 64) and not partial.exists()
        shutil.rmtree(dst)
        (partial / "0").mkdir(parents=True)


# ------------------------------------------------------------------------------------------
# 10. clear messages about damaged or odd packages
# ------------------------------------------------------------------------------------------

def test_missing_weights_file_falls_back_and_is_named(package_isotropic, stack, tmp_path):
    folder = _copy(package_isotropic, tmp_path / "noonnx")
    (folder / "weights.onnx").unlink()
    pkg = _zip(folder, tmp_path / "noonnx.zip")
    out = tmp_path / "o.tif"
    res = ok(_cli("predict", pkg, stack, out, "--no-check"))
    assert "weights.onnx" in res.output and "missing" in res.output and out.exists()
    assert "NoneType" not in res.output
    res = _cli("predict", pkg, stack, tmp_path / "o2.tif", "--weight-format", "onnx")
    clean_failure(res, "no onnx weights", "torchscript")
    assert "weights.onnx" in res.output  # the warning says why
    for p in (pkg, folder):
        clean_failure(_cli("validate", p), "weights.onnx", "missing", "get the complete package")
    # nothing at all to run: one message
    for f in ("weights_torchscript.pt", "weights_state_dict.pt"):
        (folder / f).unlink()
    clean_failure(_cli("predict", folder, stack, tmp_path / "o3.tif"), "no weights",
                  "weights.onnx")


def test_unknown_format_version_is_named(package_isotropic, stack, tmp_path):
    pkg = _copy(package_isotropic, tmp_path / "future")
    _edit_rdf(pkg, lambda rdf: rdf.update(format_version="0.9.0"))
    for res in (_cli("predict", pkg, stack, tmp_path / "o.tif"), _cli("validate", pkg)):
        clean_failure(res, "format_version", "0.9.0", "pip install -U bioimageio.spec")


def test_url_weights_are_named_and_not_fetched(package_isotropic, stack, tmp_path):
    pkg = _copy(package_isotropic, tmp_path / "url")
    _edit_rdf(pkg, lambda rdf: rdf["weights"]["onnx"].update(
        source="https://weights.invalid/w.onnx"))
    res = _cli("validate", pkg)
    clean_failure(res, "https://weights.invalid/w.onnx", "offline", "bioimageio package")
    assert "re-export" not in res.output
    assert "Name or service" not in res.output
    res = ok(_cli("predict", pkg, stack, tmp_path / "o.tif", "--no-check"))
    assert "weights.invalid" in res.output and "Name or service" not in res.output
    res = _cli("check", pkg, "--for", "bioimageio", "--json")
    finding = json.loads(res.output)
    text = json.dumps(finding)
    assert "bioimageio.offline" in text and "Name or service" not in text


def test_odd_yaml_value_is_named_not_unreachable(package_isotropic, stack, tmp_path):
    pkg = _copy(package_isotropic, tmp_path / "set")
    text = (pkg / "rdf.yaml").read_text()
    (pkg / "rdf.yaml").write_text(text.replace("name: ", "extra_tags: !!set {a, b}\nname: ", 1))
    for res in (_cli("predict", pkg, stack, tmp_path / "o.tif"), _cli("validate", pkg)):
        clean_failure(res, "extra_tags", "set")
        assert "unreachable" not in res.output
    res = _cli("check", pkg, "--for", "bioimageio")
    assert res.exit_code == 1 and "extra_tags" in res.output and "unreachable" not in res.output
