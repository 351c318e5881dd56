"""The self-check before every prediction (issue: right output or no output): the package's
test input through the same runner, weights and windows must reproduce its test output, and
a failure says what is at fault (the windows, sharpstack's runner or the weights), before any
output exists. Also: a flat (constant or empty) stack is refused instead of restored."""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from sharpstack.predict import windows as _pipeline
from sharpstack.cli import app
from sharpstack.errors import InputError, PackageError
from sharpstack.io import as_dataarray, read_stack, write_stack
from sharpstack.predict import predict_array, predict_file

from ._cli import clean_failure

runner = CliRunner()


def _copy(package: Path, dest: Path) -> Path:
    shutil.copytree(package, dest)
    return dest


def _rehash(folder: Path, name: str) -> None:
    """Write the sha256 of ``folder/name`` into rdf.yaml where the old one stood (what an
    attacker, or a careless edit, would do)."""
    rdf = folder / "rdf.yaml"
    text = rdf.read_text()
    descr = yaml.safe_load(text)
    new = hashlib.sha256((folder / name).read_bytes()).hexdigest()

    def walk(node):
        if isinstance(node, dict):
            if str(node.get("source", "")).endswith(name) and "sha256" in node:
                yield node["sha256"]
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)

    for old in set(walk(descr)):
        text = text.replace(old, new)
    rdf.write_text(text)


def _iso_stack(tmp_path: Path, package: Path) -> Path:
    """A float32 stack from the package's test input, 2.5x its depth (several z windows)."""
    x = np.load(package / "test_input.npy")[0, 0].astype(np.float32)
    big = np.concatenate([x, x[::-1], x[: x.shape[0] // 2]], axis=0)
    return write_stack(tmp_path / "stack.tif", as_dataarray(big, "ZYX"))


def test_windows_at_fault_are_named_and_nothing_is_written(tmp_path, package_isotropic,
                                                            monkeypatch):
    src = _iso_stack(tmp_path, package_isotropic)
    real = _pipeline.crop

    def shifted(tile, wins, name):  # a stitching defect: inner windows keep the wrong part
        if any(w.src > 0 for w in wins.values() if w.dst is not None):
            wins = {k: (w if w.dst is None or w.src == 0 else type(w)(w.start, w.size,
                                                                      w.src - 1, w.dst))
                    for k, w in wins.items()}
        return real(tile, wins, name)

    monkeypatch.setattr(_pipeline, "crop", shifted)
    with pytest.raises(PackageError, match="windows are at fault.*not the weights"):
        predict_file(package_isotropic, src, tmp_path / "out.tif", tile={"z": 40})
    res = runner.invoke(app, ["predict", str(package_isotropic), str(src),
                              str(tmp_path / "cli.tif"), "--tile", "40,64,64"])
    clean_failure(res, "windows are at fault", "--tile")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.tif"]
    # --no-check skips the self-check: the (here deliberately broken) windows then run
    res = runner.invoke(app, ["predict", str(package_isotropic), str(src),
                              str(tmp_path / "unchecked.tif"), "--tile", "40,64,64",
                              "--no-check"])
    assert res.exit_code == 0, res.output


def test_tampered_weights_are_blamed_on_the_weights(tmp_path, package_isotropic):
    pkg = _copy(package_isotropic, tmp_path / "pkg")
    ts = torch.jit.load(str(pkg / "weights_torchscript.pt"))
    with torch.no_grad():
        for p in ts.parameters():
            p.neg_()  # well-formed weights, every sign flipped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts.save(str(pkg / "weights_torchscript.pt"))
    _rehash(pkg, "weights_torchscript.pt")
    src = _iso_stack(tmp_path, package_isotropic)
    res = runner.invoke(app, ["predict", str(pkg), str(src), str(tmp_path / "out.tif"),
                              "--weight-format", "torchscript"])
    clean_failure(res, "torchscript weights do not reproduce", "damaged or were altered",
                  "bioimageio.core fails the same way")
    assert not (tmp_path / "out.tif").exists()
    # the untouched ONNX weights of the same package still pass and predict
    res = runner.invoke(app, ["predict", str(pkg), str(src), str(tmp_path / "out.tif"),
                              "--weight-format", "onnx"])
    assert res.exit_code == 0, res.output


def test_test_output_with_a_wrong_sha256_is_a_clear_error(tmp_path, package_isotropic):
    pkg = _copy(package_isotropic, tmp_path / "pkg")
    np.save(pkg / "test_output.npy", np.load(pkg / "test_output.npy") * 2)
    src = _iso_stack(tmp_path, package_isotropic)
    res = runner.invoke(app, ["predict", str(pkg), str(src), str(tmp_path / "out.tif")])
    clean_failure(res, "test tensors cannot be read", "SHA256 mismatch", "--no-check")
    assert not (tmp_path / "out.tif").exists()


def test_pickled_object_test_input_is_a_clear_error(tmp_path, package_isotropic):
    pkg = _copy(package_isotropic, tmp_path / "pkg")
    np.save(pkg / "test_input.npy", np.empty((1, 1, 8, 8, 8), dtype=object), allow_pickle=True)
    _rehash(pkg, "test_input.npy")
    src = _iso_stack(tmp_path, package_isotropic)
    res = runner.invoke(app, ["predict", str(pkg), str(src), str(tmp_path / "out.tif")])
    clean_failure(res, "test tensors cannot be read", "Object arrays", "--no-check")
    assert not (tmp_path / "out.tif").exists()


def test_self_check_covers_the_windows_of_the_users_stack(tmp_path, package_isotropic):
    src = _iso_stack(tmp_path, package_isotropic)
    lines: list[str] = []
    predict_file(package_isotropic, src, tmp_path / "out.tif", tile={"z": 40}, log=lines.append)
    text = "\n".join(lines)
    assert "test output is reproduced" in text and "windows along z agree" in text
    whole = predict_array(package_isotropic, read_stack(src), tile=1 << 30, check=False)
    assert np.abs(read_stack(tmp_path / "out.tif").values - whole.values).max() <= 1e-4


@pytest.mark.parametrize("value", [0.0, 7.5])
def test_predict_refuses_a_constant_or_empty_stack(tmp_path, package_isotropic, value):
    src = write_stack(tmp_path / "flat.tif", as_dataarray(np.full((48, 64, 64), value, np.float32),
                                                        "ZYX"))
    with pytest.raises(InputError, match="same value.*percentiles.*constant or empty"):
        predict_array(package_isotropic, read_stack(src))
    res = runner.invoke(app, ["predict", str(package_isotropic), str(src),
                              str(tmp_path / "out.tif")])
    clean_failure(res, "constant or empty", "right file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.tif"]
