"""Export: packages follow DESIGN.md's safe subset, pass bioimageio.core, and reproduce the
in-process restoration through sharpstack predict."""

from __future__ import annotations

import zipfile

import numpy as np
import onnx
import pytest
import yaml

from sharpstack.errors import OutputExistsError, PackageError


def _rdf(pkg):
    if pkg.is_dir():
        return yaml.safe_load((pkg / "rdf.yaml").read_text())
    with zipfile.ZipFile(pkg) as z:
        return yaml.safe_load(z.read("rdf.yaml"))


@pytest.mark.parametrize("which", ["package_upsample", "package_isotropic"])
def test_rdf_follows_the_safe_subset(which, request):
    pkg = request.getfixturevalue(which)
    rdf = _rdf(pkg)
    assert isinstance(rdf["documentation"], str) and rdf["documentation"].endswith(".md")
    assert rdf["covers"] and all(isinstance(c, str) for c in rdf["covers"])
    assert "config" not in rdf and "github_user" not in rdf
    assert set(rdf["weights"]) == {"torchscript", "onnx", "pytorch_state_dict"}
    assert "parent" not in rdf["weights"]["pytorch_state_dict"]
    assert rdf["weights"]["onnx"]["parent"] == rdf["weights"]["torchscript"]["parent"] \
        == "pytorch_state_dict"
    assert rdf["cite"][0]["doi"] == "10.1007/978-3-319-66185-8_15"
    assert rdf["license"] and rdf["authors"]
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space", "space"]
    assert [a.get("id") for a in inp["axes"][2:]] == ["z", "y", "x"]
    for a in inp["axes"][2:]:
        assert a["size"]["min"] % a["size"]["step"] == 0
    for a in out["axes"][2:]:
        assert a["size"]["offset"] == 0 and a["halo"] >= 1
    pre = [p for p in inp["preprocessing"] if p["id"] != "ensure_dtype"]
    assert len(pre) == 1
    pre = pre[0]
    assert pre["id"] == "scale_range"
    assert pre["kwargs"]["min_percentile"] == 1.0 and pre["kwargs"]["max_percentile"] == 99.8


def test_onnx_is_readable_by_old_runtimes(package_upsample, tmp_path):
    with zipfile.ZipFile(package_upsample) as z:
        z.extract("weights.onnx", tmp_path)
    m = onnx.load(tmp_path / "weights.onnx")
    assert m.ir_version <= 8
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) <= 17


def test_sample_tiff_equals_test_input(package_upsample, tmp_path):
    from sharpstack.io import read_stack

    with zipfile.ZipFile(package_upsample) as z:
        z.extractall(tmp_path)
    sample = read_stack(tmp_path / "sample_input.tif").values
    test = np.load(tmp_path / "test_input.npy")
    np.testing.assert_array_equal(sample, test[0, 0])


def test_packages_validate_again(package_upsample, package_isotropic):
    from sharpstack.workflows import validate_package

    for pkg in (package_upsample, package_isotropic):
        ok, report = validate_package(pkg, ["torchscript"])
        assert ok, report


def test_predict_reproduces_in_process_restoration(package_upsample, isonet_run, synth_data,
                                                   tmp_path):
    from sharpstack.io import read_stack
    from sharpstack.methods.isonet import restore
    from sharpstack.predict import predict_file

    _, model = isonet_run
    out = predict_file(package_upsample, synth_data["paths"]["anisotropic"], tmp_path / "r.tif")
    got = read_stack(out)
    aniso = synth_data["anisotropic"]
    want = restore(model, aniso, factor=8)
    assert got.shape == (aniso.shape[0] * 8,) + aniso.shape[1:]
    np.testing.assert_allclose(got.values, want, atol=1e-4)
    # the calibration follows the sampling: z spacing divided by the factor
    assert got.attrs["voxel_size"]["z"] == pytest.approx(0.2)
    assert got.attrs["voxel_size"]["x"] == pytest.approx(0.2)


def test_isotropic_deployable_keeps_shape(package_isotropic, synth_data, tmp_path):
    from sharpstack.methods.isonet import acquisition
    from sharpstack.io import as_dataarray
    from sharpstack.predict import predict_array

    up = acquisition.upsample_linear(synth_data["anisotropic"], 8, axis=0)
    res = predict_array(package_isotropic, as_dataarray(up, "ZYX"))
    assert res.shape == up.shape and np.isfinite(res.values).all()


def test_failed_package_test_writes_nothing(isonet_run, synth_data, tmp_path, monkeypatch):
    import sharpstack.export.package as pkgmod
    from sharpstack.workflows import export_run

    run, _ = isonet_run
    monkeypatch.setattr(pkgmod, "test_package", lambda *a, **k: (False, "simulated failure"))
    out = tmp_path / "bad.zip"
    with pytest.raises(PackageError, match="simulated failure"):
        export_run(run, synth_data["paths"]["anisotropic"], out)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_existing_output(isonet_run, synth_data, tmp_path):
    from sharpstack.workflows import export_run

    run, _ = isonet_run
    out = tmp_path / "exists.zip"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        export_run(run, synth_data["paths"]["anisotropic"], out)
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("which,claims,refused", [
    ("package_isotropic", ("bioimageio", "deepimagej", "ilastik"), ("qupath",)),
    ("package_upsample", ("bioimageio",), ("deepimagej", "ilastik", "qupath")),
    ("package_slice2d", ("bioimageio", "deepimagej", "ilastik", "qupath"), ()),
])
def test_every_deployable_passes_its_claims_by_construction(which, claims, refused, request):
    """3D same-shape, 3D z-upsampling and 2D: each passes `sharpstack check` for the
    consumers it claims, and the others are refused with a reason, also in its model card."""
    from sharpstack.export.consumers import check_package

    pkg = request.getfixturevalue(which)
    report = check_package(pkg)
    assert report.ok(claims), report.to_text()
    for c in refused:
        rep = report.consumers[c]
        assert not rep.compatible and rep.errors[0].message
    if pkg.is_dir():
        card = (pkg / "README.md").read_text()
    else:
        with zipfile.ZipFile(pkg) as z:
            card = z.read("README.md").decode()
    assert "## Consumers" in card and "<!-- sharpstack:compat -->" not in card
    for c in refused:
        assert f"| {c} | no |" in card


def test_slice2d_package_runs_on_an_axial_slice(package_slice2d, isonet_run, synth_data):
    import torch

    from sharpstack.methods.isonet import acquisition
    from sharpstack.io import as_dataarray
    from sharpstack.predict import predict_array

    _, model = isonet_run
    up = acquisition.upsample_linear(synth_data["anisotropic"], 8, axis=0)
    xz = np.ascontiguousarray(up[:, 20, :])
    got = predict_array(package_slice2d, as_dataarray(xz, "YX")).values
    x = model.normalizer.before(xz)
    with torch.no_grad():
        want = model.net(torch.from_numpy(x)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
