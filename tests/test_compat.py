"""Consumer compatibility checks (sharpstack.export.consumers): a tiny real package, broken copies.

One valid spec-0.5 package is built per module (a tiny 3D net with IsoNet's ops, TorchScript +
ONNX opset 17 weights, scale_range with both percentiles, saved with bioimageio.spec and then
post-processed so that ``documentation`` and ``covers`` are plain strings). Each broken variant
edits the raw rdf.yaml of an unzipped copy (or swaps the ONNX file) and must be rejected with
the right rule for the right consumer.
"""

from __future__ import annotations

import copy
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("bioimageio.spec")
pytest.importorskip("onnx")

import torch.nn as nn  # noqa: E402

from sharpstack.errors import InputError  # noqa: E402
from sharpstack.export.consumers import (  # noqa: E402
    CONSUMERS,
    CompatReport,
    Finding,
    check_package,
)


def _TinyIso() -> nn.Module:  # noqa: N802
    """sharpstack's IsoNet deploy module (2D U-Net on xz and yz planes, fused), tiny."""
    from sharpstack.methods.isonet.isonet_arch import IsoNetDeploy

    return IsoNetDeploy("unet", {"base": 2, "depth": 1, "kernel": 7, "dropout": 0.0}, factor=1)


def _export_onnx(net, x, path: Path, opset: int, dynamic: bool = True) -> None:
    dyn = ({"raw": {0: "b", 2: "z", 3: "y", 4: "x"}, "restored": {0: "b", 2: "z", 3: "y", 4: "x"}}
           if dynamic else None)
    torch.onnx.export(net, (x,), str(path), opset_version=opset, dynamo=False,
                      input_names=["raw"], output_names=["restored"], dynamic_axes=dyn)


def _build_valid_package(work: Path) -> tuple[Path, Path]:
    """Build the valid package; return (zip path, unzipped folder with post-processed rdf)."""
    import tifffile
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as m

    torch.manual_seed(0)
    net = _TinyIso().eval()
    x = torch.rand(1, 1, 8, 16, 16, generator=torch.Generator().manual_seed(1)) * 1000.0
    src = work / "src"
    src.mkdir()
    # test output = the package's own pipeline: scale_range (1, 99.8 percentiles), network.
    xn = x.numpy()
    lo, hi = np.percentile(xn, [1.0, 99.8])
    xp = ((xn - lo) / (hi - lo + 1e-6)).astype(np.float32)
    with torch.no_grad():
        y = net(torch.from_numpy(xp)).numpy()
    np.save(src / "test_input.npy", xn)
    np.save(src / "test_output.npy", y)
    tifffile.imwrite(src / "sample_input.tif", xn)
    tifffile.imwrite(src / "sample_output.tif", y)
    torch.jit.trace(net, torch.from_numpy(xp)).save(str(src / "weights.pt"))
    _export_onnx(net, torch.from_numpy(xp), src / "weights.onnx", 17)
    (src / "README.md").write_text("# tiny\n\n## Validation\n\nnone, test fixture\n")
    import imageio.v3 as iio

    iio.imwrite(src / "cover.png", np.zeros((32, 64, 3), np.uint8))

    def in_axes():
        return [m.BatchAxis(), m.ChannelAxis(channel_names=[m.Identifier("raw")]),
                m.SpaceInputAxis(id=m.AxisId("z"), size=m.ParameterizedSize(min=8, step=8)),
                m.SpaceInputAxis(id=m.AxisId("y"), size=m.ParameterizedSize(min=16, step=16)),
                m.SpaceInputAxis(id=m.AxisId("x"), size=m.ParameterizedSize(min=16, step=16))]

    def out_axis(a):
        return m.SpaceOutputAxisWithHalo(
            id=m.AxisId(a), halo=2,
            size=m.SizeReference(tensor_id=m.TensorId("raw"), axis_id=m.AxisId(a)))

    descr = m.ModelDescr(
        name="tiny isonet fixture", description="tiny 3D test network",
        authors=[m.Author(name="sharpstack tests")],
        cite=[m.CiteEntry(text="Weigert et al. 2017", doi=m.Doi("10.1007/978-3-319-66185-8_15"))],
        license=m.LicenseId("MIT"), tags=["test"],
        documentation=m.FileDescr(source=src / "README.md"),
        covers=[m.FileDescr(source=src / "cover.png")],
        inputs=[m.InputTensorDescr(
            id=m.TensorId("raw"), axes=in_axes(),
            test_tensor=m.FileDescr(source=src / "test_input.npy"),
            sample_tensor=m.FileDescr(source=src / "sample_input.tif"),
            data=m.IntervalOrRatioDataDescr(type="float32"),
            preprocessing=[m.ScaleRangeDescr(kwargs=m.ScaleRangeKwargs(
                axes=[m.AxisId("z"), m.AxisId("y"), m.AxisId("x")],
                min_percentile=1.0, max_percentile=99.8))])],
        outputs=[m.OutputTensorDescr(
            id=m.TensorId("restored"),
            axes=[m.BatchAxis(), m.ChannelAxis(channel_names=[m.Identifier("restored")]),
                  out_axis("z"), out_axis("y"), out_axis("x")],
            test_tensor=m.FileDescr(source=src / "test_output.npy"),
            sample_tensor=m.FileDescr(source=src / "sample_output.tif"))],
        weights=m.WeightsDescr(
            torchscript=m.TorchscriptWeightsDescr(
                source=src / "weights.pt",
                pytorch_version=m.Version(torch.__version__.split("+")[0])),
            onnx=m.OnnxWeightsDescr(source=src / "weights.onnx", opset_version=17,
                                    parent="torchscript")),
    )
    raw_zip = save_bioimageio_package(descr, output_path=work / "raw.zip")
    folder = work / "valid"
    with zipfile.ZipFile(raw_zip) as z:
        z.extractall(folder)
    rdf = _read(folder)
    rdf["documentation"] = rdf["documentation"]["source"]
    rdf["covers"] = [c["source"] for c in rdf["covers"]]
    # bioimageio.spec accepts plain strings only for format_version < 0.5.11 (it converts them)
    rdf["format_version"] = "0.5.10"
    _write(folder, rdf)
    zpath = work / "valid.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted(folder.iterdir()):
            z.write(p, p.name)
    return zpath, folder


def _read(folder: Path) -> dict:
    return yaml.safe_load((folder / "rdf.yaml").read_text())


def _write(folder: Path, rdf: dict) -> None:
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    work = tmp_path_factory.mktemp("compat")
    zpath, folder = _build_valid_package(work)
    return {"zip": zpath, "folder": folder, "work": work}


@pytest.fixture
def variant(pkg, tmp_path):
    """Return a function(edit) -> folder: an unzipped copy whose raw rdf dict ``edit`` changes."""

    def make(edit):
        dst = tmp_path / "variant"
        shutil.copytree(pkg["folder"], dst)
        rdf = _read(dst)
        edit(rdf, dst)
        _write(dst, rdf)
        return dst

    return make


def _rules(report: CompatReport, consumer: str, severity: str = "error") -> set[str]:
    return {f.rule for f in report.consumers[consumer].findings if f.severity == severity}


LOCAL = ("deepimagej", "ilastik", "qupath")


# -------------------------------------------------------------------------------------------


def test_valid_package_passes_its_consumers(pkg):
    report = check_package(pkg["zip"])
    assert report.targets == CONSUMERS
    assert report.compatible == {"bioimageio": True, "deepimagej": True, "ilastik": True,
                                 "qupath": False}, report.to_text()
    assert report.ok(["bioimageio", "deepimagej", "ilastik"])
    assert not report.ok()
    # the only QuPath error is the honest one: a 3D model does not run there
    assert _rules(report, "qupath") == {"qupath.2d-only"}
    assert "2D" in report.consumers["qupath"].errors[0].message


def test_folder_and_rdf_path_are_accepted(pkg):
    for src in (pkg["folder"], pkg["folder"] / "rdf.yaml"):
        report = check_package(src, ["deepimagej"])
        assert report.ok(), report.to_text()


def test_valid_package_runs_bioimageio_test(pkg):
    report = check_package(pkg["zip"], ["bioimageio"], run_bioimageio_test=True)
    assert report.ok(), report.to_text()


def test_two_inputs_rejected(variant):
    def edit(rdf, _):
        second = copy.deepcopy(rdf["inputs"][0])
        second["id"] = "raw2"
        rdf["inputs"].append(second)

    report = check_package(variant(edit), LOCAL)
    assert "deepimagej.one-input" in _rules(report, "deepimagej")
    assert "ilastik.one-input" in _rules(report, "ilastik")
    assert "qupath.one-input" in _rules(report, "qupath")


def test_time_axis_rejected(variant):
    def edit(rdf, _):
        rdf["inputs"][0]["axes"].insert(1, {"type": "time", "id": "t", "size": 1})

    report = check_package(variant(edit), LOCAL)
    assert "deepimagej.axis-ids" in _rules(report, "deepimagej")
    assert "ilastik.axis-ids" in _rules(report, "ilastik")


def test_space_axis_without_id_rejected(variant):
    def edit(rdf, _):
        del rdf["inputs"][0]["axes"][4]["id"]

    assert "deepimagej.axis-id-explicit" in _rules(check_package(variant(edit), ["deepimagej"]),
                                                   "deepimagej")


def test_mapping_documentation_and_covers_rejected(variant):
    def edit(rdf, _):
        rdf["documentation"] = {"source": "README.md", "sha256": "0" * 64}
        rdf["covers"] = [{"source": "cover.png", "sha256": "0" * 64}]

    report = check_package(variant(edit), ["deepimagej", "qupath", "ilastik"])
    for c in ("deepimagej", "qupath"):
        assert {f"{c}.documentation-plain-string", f"{c}.covers-plain-strings"} <= _rules(report, c)
    fix = next(f.fix for f in report.findings if f.rule.endswith("documentation-plain-string"))
    assert "documentation: README.md" in fix
    assert report.compatible["ilastik"]  # tiktorch reads through bioimageio.core: fine there


def test_onnx_opset_18_rejected_for_deepimagej(pkg, variant):
    def edit(rdf, folder):
        import onnx

        model = onnx.load(str(folder / "weights.onnx"))
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                imp.version = 18
        onnx.save(model, str(folder / "weights.onnx"))
        rdf["weights"]["onnx"]["opset_version"] = 18

    report = check_package(variant(edit), ["deepimagej", "ilastik"])
    assert "onnx.opset<=17" in _rules(report, "deepimagej")
    assert report.compatible["ilastik"]  # ilastik does not run onnx


def test_onnx_ir_version_and_fixed_axes_rejected(variant):
    def edit(rdf, folder):
        import onnx

        model = onnx.load(str(folder / "weights.onnx"))
        model.ir_version = 9
        for d in model.graph.input[0].type.tensor_type.shape.dim:
            d.dim_value = 16
        onnx.save(model, str(folder / "weights.onnx"))

    report = check_package(variant(edit), ["deepimagej", "bioimageio"])
    assert {"onnx.ir<=8", "onnx.dynamic-axes"} <= _rules(report, "deepimagej")
    # bioimageio.core's test_model also runs other tile sizes and batch sizes
    assert "onnx.dynamic-axes" in _rules(report, "bioimageio")


def test_scale_range_without_percentiles_rejected(variant):
    def edit(rdf, _):
        for p in rdf["inputs"][0]["preprocessing"]:
            if p["id"] == "scale_range":
                p["kwargs"].pop("min_percentile")
                p["kwargs"].pop("max_percentile")

    report = check_package(variant(edit), LOCAL)
    assert "deepimagej.scale-range-percentiles" in _rules(report, "deepimagej")
    assert "qupath.scale-range-percentiles" in _rules(report, "qupath")


def test_unsupported_processing_and_partial_scale_linear_rejected(variant):
    def edit(rdf, _):
        rdf["outputs"][0]["postprocessing"] = [{"id": "scale_linear", "kwargs": {"gain": 2.0}},
                                               {"id": "scale_mean_variance",
                                                "kwargs": {"reference_tensor": "raw"}}]

    rules = _rules(check_package(variant(edit), ["deepimagej"]), "deepimagej")
    assert {"deepimagej.scale-linear-gain-offset", "deepimagej.processing-supported"} <= rules


def test_min_not_multiple_of_step_rejected(variant):
    def edit(rdf, _):
        rdf["inputs"][0]["axes"][2]["size"] = {"min": 12, "step": 8}

    report = check_package(variant(edit), ["deepimagej"])
    finding = next(f for f in report.findings if f.rule == "deepimagej.min-multiple-of-step")
    assert "'z'" in finding.message and "8" in finding.fix


def test_config_without_id_rejected_and_nickname_accepted(variant):
    report = check_package(variant(lambda rdf, _: rdf.update(config={"sharpstack": {"v": 1}})),
                           ["deepimagej"])
    assert "deepimagej.config-needs-id" in _rules(report, "deepimagej")


def test_config_with_nickname_accepted(variant):
    def edit(rdf, _):
        rdf["config"] = {"bioimageio": {"nickname": "tiny-iso"}}

    assert check_package(variant(edit), ["deepimagej"]).ok()


def test_upsampled_output_reported_for_deepimagej_and_ilastik(variant):
    # z upsampled x4: spec size = ref * ref.scale / axis.scale = 8 * 1 / 0.25 = 32;
    # JDLL computes ref * axis.scale = 2.
    def edit(rdf, _):
        rdf["outputs"][0]["axes"][2]["scale"] = 0.25

    report = check_package(variant(edit), LOCAL)
    f = next(f for f in report.findings if f.rule == "deepimagej.output-scale")
    assert "x4" in f.message and "32" in f.message and "= 2 " in f.message
    assert "ilastik.output-scale" in _rules(report, "ilastik")


def test_output_offset_rejected(variant):
    def edit(rdf, _):
        rdf["outputs"][0]["axes"][3]["size"]["offset"] = -2

    assert "deepimagej.output-offset" in _rules(check_package(variant(edit), ["deepimagej"]),
                                                "deepimagej")


def test_state_dict_only_rejected(variant):
    def edit(rdf, _):
        rdf["weights"] = {"pytorch_state_dict": {
            "source": "weights.pt", "pytorch_version": "2.4",
            "architecture": {"callable": "TinyIso", "import_from": "x", "kwargs": {}}}}

    report = check_package(variant(edit), LOCAL)
    assert "deepimagej.weights-format" in _rules(report, "deepimagej")
    assert "Python side environment" in report.consumers["deepimagej"].errors[0].message
    assert "qupath.weights-format" in _rules(report, "qupath")
    assert "ilastik.weights-format" not in _rules(report, "ilastik")  # tiktorch loads state dicts


def test_2d_model_passes_qupath(variant):
    def edit(rdf, _):
        del rdf["inputs"][0]["axes"][2]
        del rdf["outputs"][0]["axes"][2]
        for p in rdf["inputs"][0]["preprocessing"]:
            if p["id"] == "scale_range":
                p["kwargs"]["axes"] = ["y", "x"]

    report = check_package(variant(edit), ["qupath", "ilastik"])
    assert report.ok(), report.to_text()


def test_sample_tiff_must_match_test_input(variant):
    def edit(rdf, folder):
        import tifffile

        tifffile.imwrite(folder / "sample_input.tif", np.zeros((1, 1, 8, 16, 16), np.float32))

    assert "deepimagej.sample-matches-test-input" in _rules(
        check_package(variant(edit), ["deepimagej"]), "deepimagej")


def test_plain_strings_with_format_0_5_12_rejected_by_bioimageio(variant):
    report = check_package(variant(lambda rdf, _: rdf.update(format_version="0.5.12")),
                           ["bioimageio"])
    assert {"bioimageio.plain-strings-need-format-0.5.10", "bioimageio.spec-valid"} <= _rules(
        report, "bioimageio")


def test_bioimageio_rejects_invalid_rdf(variant):
    def edit(rdf, _):
        rdf["inputs"][0]["axes"][2]["size"] = {"min": 8, "step": -3}

    report = check_package(variant(edit), ["bioimageio"])
    assert "bioimageio.spec-valid" in _rules(report, "bioimageio")


def test_spec_0_4_package_is_refused(variant):
    with pytest.raises(InputError, match="spec 0.5"):
        check_package(variant(lambda rdf, _: rdf.update(format_version="0.4.10")))


def test_unknown_target_suggests_name(pkg):
    with pytest.raises(InputError, match="did you mean 'deepimagej'"):
        check_package(pkg["zip"], ["deepimagj"])
    with pytest.raises(InputError, match="does not exist"):
        check_package(pkg["work"] / "missing.zip")


def test_report_text_and_dict(pkg):
    report = check_package(pkg["zip"], ["qupath", "deepimagej"])
    assert report.targets == ("deepimagej", "qupath")
    text = report.to_text()
    assert "deepimagej  yes" in text and "qupath      NO" in text
    assert "qupath.2d-only" in text and "fix:" in text
    d = json.loads(json.dumps(report.to_dict()))
    assert d["consumers"]["qupath"]["compatible"] is False
    assert d["consumers"]["qupath"]["findings"][0]["rule"] == "qupath.2d-only"
    assert isinstance(report.findings[0], Finding)
    with pytest.raises(InputError, match="ilastik"):
        report.ok(["ilastik"])
