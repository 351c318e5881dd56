"""Build, test and write a bioimage.io (spec 0.5) model package from a deploy module.

The package follows the safe subset of DESIGN.md for every consumer: one input, one output,
axes ``batch, channel, [z,] y, x``; parameterised input sizes (``min`` a multiple of ``step``);
outputs as ``SizeReference`` (offset 0) with a halo covering the receptive field; TorchScript,
ONNX (opset 17, IR 8) and ``pytorch_state_dict`` weights; ``scale_range`` with both percentiles
written; test output produced by bioimageio.core's own pipeline from the test input; a sample
TIFF identical to the test input; ``documentation`` and ``covers`` rewritten as plain strings
(deepImageJ and QuPath cannot read the ``{source, sha256}`` form); no ``config`` section (the
training data's statistics after normalisation, which ``predict`` compares an input with, are a
data-only attachment ``training_stats.json`` instead: see :mod:`sharpstack.predict.distribution`).

Nothing is written at the destination unless ``bioimageio.core.test_model`` passes for every
weight format (offline); the zip (or folder) is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .._files import clean_stale, replace_atomically, temp_dir
from ..errors import OutputExistsError, PackageError
from ..normalize import PercentileNormalizer
from ..predict.distribution import STATS_FILE, training_statistics
from .finite_output import non_finite_output
from .weights import ONNX_OPSET, export_onnx, export_state_dict, export_torchscript

__all__ = ["AxisSpec", "PackageSpec", "build_package", "test_package", "WEIGHT_FORMATS"]

WEIGHT_FORMATS = ("pytorch_state_dict", "torchscript", "onnx")


@dataclass
class AxisSpec:
    """One space axis of the model: input size ``min + n*step``, scales and output halo."""

    id: str
    min: int
    step: int
    halo: int
    in_scale: float = 1.0
    out_scale: float = 1.0
    unit: str | None = None
    blocks: bool = False
    """The model processes the axis in independent blocks of ``min`` (``step == min``, no
    halo): written as ``concatenable`` so that runners neither pad nor overlap it."""


@dataclass
class PackageSpec:
    """Everything the exporter needs to know about one deployable model."""

    name: str
    description: str
    module: torch.nn.Module
    arch_source: Path
    arch_callable: str
    arch_kwargs: dict[str, Any]
    axes: list[AxisSpec]
    test_input: np.ndarray
    """Raw (unnormalised) test input with the space axes only, e.g. (Z, Y, X)."""
    normalizer: PercentileNormalizer
    documentation: str
    """Markdown text of the model card."""
    covers: list[Path]
    authors: list[dict[str, str]]
    cite: list[dict[str, str]]
    license: str = "MIT"
    tags: list[str] = field(default_factory=list)
    input_description: str = ""
    output_description: str = ""
    training_data: str | None = None
    version: str = "0.1.0"
    attachments: list[Path] = field(default_factory=list)
    training_stats: dict[str, Any] | None = None
    """Statistics of the training data after the normalisation
    (:func:`sharpstack.predict.distribution.training_statistics`), written as the data-only
    attachment ``training_stats.json`` that ``predict`` compares an input with; None: none."""
    batch_size: int | None = 1
    claims: tuple[str, ...] = ("bioimageio",)
    """Consumers this package must be compatible with (``sharpstack check``): the export fails
    and writes nothing otherwise. The card gets the full per-consumer table either way."""
    """Fixed batch size (1: what deepImageJ/ilastik/QuPath send; it also keeps
    ``test_model``'s size sweep to three runs), or None for any batch size."""


def _space_axes_ids(spec: PackageSpec) -> list[str]:
    return [a.id for a in spec.axes]


def _descr(spec: PackageSpec, files: Mapping[str, Path], test_output: Path):
    from pydantic import ValidationError

    try:
        return _descr_unchecked(spec, files, test_output)
    except ValidationError as exc:
        raise PackageError(f"the model description is invalid (fix the named field, e.g. "
                           f"--name uses letters, digits, _+- () only):\n{exc}") from None


def _descr_unchecked(spec: PackageSpec, files: Mapping[str, Path], test_output: Path):
    from bioimageio.spec.model import v0_5 as m

    in_id, out_id = m.TensorId("input"), m.TensorId("output")
    in_axes: list[Any] = [m.BatchAxis(size=spec.batch_size),
                          m.ChannelAxis(channel_names=[m.Identifier("raw")])]
    out_axes: list[Any] = [m.BatchAxis(size=spec.batch_size),
                           m.ChannelAxis(channel_names=[m.Identifier("restored")])]
    for a in spec.axes:
        in_axes.append(m.SpaceInputAxis(
            id=m.AxisId(a.id), size=m.ParameterizedSize(min=a.min, step=a.step),
            scale=a.in_scale, unit=a.unit, concatenable=a.blocks))
        ref = m.SizeReference(tensor_id=in_id, axis_id=m.AxisId(a.id), offset=0)
        if a.halo > 0:
            out_axes.append(m.SpaceOutputAxisWithHalo(
                id=m.AxisId(a.id), size=ref, halo=a.halo, scale=a.out_scale, unit=a.unit))
        else:
            out_axes.append(m.SpaceOutputAxis(id=m.AxisId(a.id), size=ref,
                                              scale=a.out_scale, unit=a.unit))
    space = tuple(_space_axes_ids(spec))
    inp = m.InputTensorDescr(
        id=in_id, axes=in_axes, description=spec.input_description,
        test_tensor=m.FileDescr(source=files["test_input"]),
        sample_tensor=m.FileDescr(source=files["sample_input"]),
        data=m.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[spec.normalizer.to_bioimageio(space)])
    out = m.OutputTensorDescr(
        id=out_id, axes=out_axes, description=spec.output_description,
        test_tensor=m.FileDescr(source=test_output),
        sample_tensor=m.FileDescr(source=files["sample_output"]) if "sample_output" in files
        else None,
        data=m.IntervalOrRatioDataDescr(type="float32"))
    pt_version = m.Version(torch.__version__.split("+")[0])
    weights = m.WeightsDescr(
        pytorch_state_dict=m.PytorchStateDictWeightsDescr(
            source=files["state_dict"], pytorch_version=pt_version,
            architecture=m.ArchitectureFromFileDescr(
                source=files["arch"], callable=m.Identifier(spec.arch_callable),
                kwargs=spec.arch_kwargs)),
        torchscript=m.TorchscriptWeightsDescr(
            source=files["torchscript"], pytorch_version=pt_version,
            parent="pytorch_state_dict"),
        onnx=m.OnnxWeightsDescr(source=files["onnx"], opset_version=ONNX_OPSET,
                                parent="pytorch_state_dict"),
    )
    return m.ModelDescr(
        name=spec.name, description=spec.description,
        authors=[m.Author(**a) for a in spec.authors],
        cite=[m.CiteEntry(**c) for c in spec.cite],
        license=spec.license, tags=spec.tags, version=spec.version,
        documentation=m.FileDescr(source=files["documentation"]),
        covers=[m.FileDescr(source=files[f"cover{i}"]) for i in range(len(spec.covers))],
        inputs=[inp], outputs=[out], weights=weights,
        attachments=[m.FileDescr(source=files[f"attachment{i}"])
                     for i in range(len(spec.attachments))]
        + ([m.FileDescr(source=files["training_stats"])] if "training_stats" in files else []),
        training_data=None,
    )


def _write_files(spec: PackageSpec, work: Path, say: Callable[[str], None]) -> dict[str, Path]:
    from ..io import as_dataarray, write_tiff

    files: dict[str, Path] = {}
    module = spec.module.eval()
    x = spec.test_input.astype(np.float32)
    lo, hi = spec.normalizer.stats(x)
    example = torch.from_numpy(spec.normalizer.before(x, lo, hi)[None, None])
    say("tracing the network (TorchScript)")
    files["torchscript"] = export_torchscript(module, example, work / "weights_torchscript.pt")
    say(f"exporting ONNX (opset {ONNX_OPSET})")
    files["onnx"] = export_onnx(module, example, work / "weights.onnx",
                                space_axes=len(spec.axes))
    say("writing the state dict, architecture, test input and sample")
    files["state_dict"] = export_state_dict(module, work / "weights_state_dict.pt")
    files["arch"] = work / spec.arch_source.name
    shutil.copyfile(spec.arch_source, files["arch"])
    files["test_input"] = work / "test_input.npy"
    np.save(files["test_input"], x[None, None])
    files["sample_input"] = work / "sample_input.tif"
    # the same values as the test input; ImageJ TIFF has no batch axis, and a singleton
    # channel is implicit, so it holds the space axes only
    write_tiff(files["sample_input"], as_dataarray(x, "".join(_space_axes_ids(spec)).upper()))
    files["documentation"] = work / "README.md"
    files["documentation"].write_text(spec.documentation, encoding="utf-8")
    for i, c in enumerate(spec.covers):
        files[f"cover{i}"] = work / f"cover{i}{Path(c).suffix}"
        shutil.copyfile(c, files[f"cover{i}"])
    for i, a in enumerate(spec.attachments):
        files[f"attachment{i}"] = work / Path(a).name
        if files[f"attachment{i}"].name == STATS_FILE:
            raise PackageError(f"an attachment may not be named {STATS_FILE} (the exporter "
                               "writes that file); rename it")
        shutil.copyfile(a, files[f"attachment{i}"])
    if spec.training_stats is not None:  # data only: predict parses it as JSON
        files["training_stats"] = work / STATS_FILE
        files["training_stats"].write_text(json.dumps(spec.training_stats, indent=1),
                                           encoding="utf-8")
    return files


def _pipeline_output(descr) -> np.ndarray:
    """The test output as bioimageio.core's own pipeline computes it from the test input:
    pre-processing, network, post-processing, with no halo padding or cropping (exactly the
    steps of core's "reproduce test outputs" check)."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import get_test_input_sample

    sample = get_test_input_sample(descr)
    with create_prediction_pipeline(bioimageio_model=descr) as pp:
        pp.apply_preprocessing(sample)
        res = pp.predict_sample_without_blocking(
            sample, skip_preprocessing=True, skip_postprocessing=True,
            skip_input_padding=True, skip_output_cropping=True)
        pp.apply_postprocessing(res)
    (t,) = res.members.values()
    return np.asarray(t.data, dtype=np.float32)


COMPAT_MARKER = "<!-- sharpstack:compat -->"


def _compat_markdown(report) -> str:
    """The per-consumer table of ``sharpstack check`` for the model card."""
    lines = ["## Consumers (checked by `sharpstack check` at export)", "",
             "| consumer | runs this package | why not / notes |", "|---|---|---|"]
    for name, rep in report.consumers.items():
        why = "; ".join(f"{f.rule}: {f.message}" for f in rep.errors) or "-"
        lines.append(f"| {name} | {'yes' if rep.compatible else 'no'} | "
                     f"{why.replace('|', '/')} |")
    return "\n".join(lines)


def _plain_strings(rdf: dict[str, Any]) -> dict[str, Any]:
    """Rewrite ``documentation`` and ``covers`` as plain strings (deepImageJ/QuPath read them
    as strings; bioimageio.spec writes ``{source, sha256}`` mappings)."""
    def plain(v):
        return v["source"] if isinstance(v, dict) and "source" in v else v

    rdf = dict(rdf)
    # bioimageio.spec reads plain-string documentation/covers for format versions < 0.5.11
    # (it converts them on load) but refuses them for 0.5.11+; 0.5.4 is also the version the
    # zoo and deepImageJ/JDLL 0.6 have long read. Nothing after 0.5.4 is used by our packages.
    rdf["format_version"] = "0.5.4"
    if "documentation" in rdf:
        rdf["documentation"] = plain(rdf["documentation"])
    if "covers" in rdf:
        rdf["covers"] = [plain(c) for c in rdf["covers"]]
    rdf.pop("config", None)
    return rdf


def _rewrite_zip(src_zip: Path, dst_zip: Path, replace: Mapping[str, Any]) -> None:
    """Copy a zip, passing the named members through ``replace[name](bytes) -> bytes``."""
    with zipfile.ZipFile(src_zip) as zin, zipfile.ZipFile(dst_zip, "w",
                                                         zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename in replace:
                data = replace[item.filename](data)
            zout.writestr(item, data)


def _rdf_plain(data: bytes) -> bytes:
    rdf = _plain_strings(yaml.safe_load(data))
    return yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True).encode("utf-8")


def test_package(source: str | Path, weight_formats: Sequence[str] = WEIGHT_FORMATS, *,
                 log: Callable[[str], None] | None = None):
    """Run ``bioimageio.core.test_model`` offline for each weight format, and the package's
    test input through each format's weights with bioimageio.core's pipeline: an output that
    is not finite (NaN, inf) fails, which ``test_model``'s comparison lets through.

    ``log`` is called with the name of each stage as it starts (one per weight format).
    Returns ``(passed: bool, report: str)`` with the summary of every failing format.
    """
    from bioimageio.core import test_model

    reports, ok = [], True
    for i, wf in enumerate(weight_formats, 1):
        if log is not None:
            log(f"testing the {wf} weights with bioimageio.core ({i}/{len(weight_formats)})")
        summary = test_model(str(source), weight_format=wf)
        if summary.status != "passed":
            ok = False
            reports.append(f"--- {wf}: {summary.status}\n{summary.format()}")
            continue
        problem = non_finite_output(source, wf)
        if problem:
            ok = False
            reports.append(f"--- {wf}: failed\n{problem}")
    return ok, "\n".join(reports)


def build_package(spec: PackageSpec, out_path: str | Path, *, overwrite: bool = False,
                  as_folder: bool = False, run_tests: bool = True,
                  log: Callable[[str], None] | None = None) -> Path:
    """Export ``spec`` as a bioimage.io package at ``out_path`` (a .zip, or a folder).

    Steps: write weights and files to a temporary folder; describe the model; compute the test
    output with bioimageio.core's pipeline; save the package; make ``documentation`` and
    ``covers`` plain strings; run ``test_model`` for every weight format; only then rename the
    result into place. A failing test raises :class:`PackageError` with the report and leaves
    nothing at ``out_path``. ``log`` is called with the name of each stage as it starts
    (trace, ONNX, test output, each consumer check, each weight format's test).
    """
    from bioimageio.spec import save_bioimageio_package

    from ..io import as_dataarray, write_tiff

    out = Path(out_path)
    try:
        clean_stale(out)  # a replace killed halfway: the old package is put back first
    except OSError:
        pass  # the checks below say what is wrong with the destination
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"{out} already exists; choose another output path or pass --overwrite")
    if not as_folder and out.suffix != ".zip":
        raise PackageError(f"package path {out} must end in .zip (or use --as-folder)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PackageError(f"cannot create the folder {out.parent} for {out} ({exc.strerror}); "
                           "choose a writable location") from None
    if not os.access(out.parent, os.W_OK):
        raise PackageError(f"{out.parent} is not writable; choose another location for the "
                           "package")
    clean_stale(out)
    with temp_dir(out, capture_tempfile=True) as tmp:
        work = Path(tmp) / "files"
        work.mkdir()
        say = log or (lambda msg: None)
        files = _write_files(spec, work, say)
        x = spec.test_input.astype(np.float32)[None, None]
        with torch.no_grad():
            first = spec.module(torch.from_numpy(spec.normalizer.before(x))).numpy()
        placeholder = work / "test_output.npy"
        np.save(placeholder, first.astype(np.float32))
        descr = _descr(spec, files, placeholder)
        say("computing the test output with bioimageio.core's pipeline")
        test_out = _pipeline_output(descr)
        np.save(placeholder, test_out)
        files["sample_output"] = work / "sample_output.tif"
        write_tiff(files["sample_output"],
                   as_dataarray(test_out[0, 0], "".join(_space_axes_ids(spec)).upper()))
        descr = _descr(spec, files, placeholder)
        say("describing and saving the package (bioimage.io spec 0.5)")
        raw_zip = Path(tmp) / "raw.zip"
        save_bioimageio_package(descr, output_path=raw_zip)
        stage = Path(tmp) / "stage.zip"
        _rewrite_zip(raw_zip, stage, {"rdf.yaml": _rdf_plain})
        from .consumers import CONSUMERS, check_package

        report = check_package(stage, CONSUMERS, log=say)
        if not report.ok(spec.claims):
            failing = [c for c in spec.claims if not report.consumers[c].compatible]
            raise PackageError(
                f"the package is not compatible with {failing}, which it claims; nothing was "
                f"written to {out}.\n{report.to_text()}")
        table = _compat_markdown(report)
        final_zip = Path(tmp) / "package.zip"
        _rewrite_zip(stage, final_zip, {"README.md": lambda b: b.decode("utf-8").replace(
            COMPAT_MARKER, table).encode("utf-8")})
        candidate: Path = final_zip
        if as_folder:
            candidate = Path(tmp) / "package"
            with zipfile.ZipFile(final_zip) as z:
                z.extractall(candidate)
        if run_tests:
            ok, report_text = test_package(candidate / "rdf.yaml" if as_folder else candidate,
                                           log=say)
            if not ok:
                raise PackageError(
                    f"bioimageio.core test_model failed; nothing was written to {out}.\n"
                    f"{report_text}")
        replace_atomically(candidate, out)  # the old package stays until the new is complete
    return out


def quality_table(quality: Mapping[str, Any] | None, float_format: str = ".4g") -> str:
    """The model card's "measured quality" section: a Markdown table of ``quality`` (floats
    written with ``float_format``), or a sentence saying nothing was measured."""
    if not quality:
        return "Not measured for this package."
    lines = ["| measure | value |", "|---|---|"]
    for k, v in quality.items():
        lines.append(f"| {k} | {v:{float_format}} |" if isinstance(v, float) else f"| {k} | {v} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# the one exporter: a method's request -> the package spec (kept below build_package so that
# the traced TorchScript's debug call stack, which records line numbers here, is unchanged)
# ------------------------------------------------------------------------------------------

__all__ += ["PackageRequest", "spec_from_request", "quality_table", "DEFAULT_AUTHORS"]

DEFAULT_AUTHORS = [{"name": "sharpstack developers"}]


@dataclass
class PackageRequest:
    """What a method hands the exporter for one deployable of a trained run
    (``Method.package_request``); :func:`spec_from_request` adds what every package shares
    (name override, authors, license, citations, claims, quality table, attachments, runtimes)
    and renders the card."""

    name: str
    """Default package name (``--name`` replaces it)."""
    description: str
    module: torch.nn.Module
    """The deploy module (self-contained, in eval mode)."""
    arch_source: Path
    """The architecture file shipped with the ``pytorch_state_dict`` weights (imports only
    torch)."""
    arch_callable: str
    arch_kwargs: dict[str, Any]
    axes: list[AxisSpec]
    """Space axes with sizes, scales and halos."""
    test_input: np.ndarray
    """Raw (unnormalised) test input with the space axes only; a valid size on every axis."""
    normalizer: PercentileNormalizer
    card_template: str
    """The method's model card (Markdown, ``str.format`` fields): :func:`spec_from_request`
    fills ``name``, ``description``, ``version``, ``quality`` and ``runtimes``, and
    :attr:`card_fields` the rest."""
    card_fields: dict[str, Any]
    covers: list[Path]
    """Cover images, already drawn (into the export's temporary folder)."""
    tags: list[str] = field(default_factory=list)
    input_description: str = ""
    output_description: str = ""
    training_data: str = ""
    quality_format: str = ".4g"
    """How the card's quality table writes floats (:func:`quality_table`)."""
    stats_data: np.ndarray | None = None
    """Raw data of the training kind, ``(..., Y, X)``, whose statistics after the package's
    normalisation go into ``training_stats.json`` (see :attr:`PackageSpec.training_stats`):
    the largest the method has at export (the training files are not kept with a run, so
    this is the export's sample stack, not the training set itself). None: the test input."""
    stats_source: str = ""
    """What :attr:`stats_data` is, in words (recorded beside the statistics)."""


def spec_from_request(request: PackageRequest, *, claims: Sequence[str] = ("bioimageio",),
                      cite: Sequence[Mapping[str, str]] = (), name: str | None = None,
                      authors: Sequence[Mapping[str, str]] | None = None, license: str = "MIT",
                      quality: Mapping[str, Any] | None = None,
                      attachments: Sequence[Path] = (), runtimes_text: str = "",
                      retrain: str = "") -> PackageSpec:
    """The :class:`PackageSpec` of a method's :class:`PackageRequest`.

    ``name`` replaces the request's default name; ``authors`` default to
    :data:`DEFAULT_AUTHORS`; ``quality`` (measured figures) becomes the card's quality table;
    ``runtimes_text`` (Markdown) goes into the card; ``claims`` are the consumers the package
    must pass ``sharpstack check`` for; ``cite`` the method's citations. The statistics of
    the request's :attr:`~PackageRequest.stats_data` (or test input) after its normalisation
    are recorded (``training_stats.json``); ``retrain`` is the command line that
    ``predict``'s out-of-distribution warning suggests.
    """
    from .. import __version__

    axes = request.axes
    x = request.test_input
    if np.ndim(x) != len(axes):
        raise ValueError(f"test input must have {len(axes)} axes "
                         f"({''.join(a.id for a in axes).upper()}), got shape {np.shape(x)}")
    for a, s in zip(axes, np.shape(x)):
        if s < a.min or (s - a.min) % a.step:
            raise ValueError(f"test input size {s} along {a.id} is not min {a.min} + n*{a.step}")
    name = name or request.name
    card = request.card_template.format(
        name=name, description=request.description, version=__version__,
        quality=quality_table(quality, request.quality_format), runtimes=runtimes_text,
        **request.card_fields)
    return PackageSpec(
        name=name, description=request.description, module=request.module,
        arch_source=Path(request.arch_source), arch_callable=request.arch_callable,
        arch_kwargs=request.arch_kwargs, axes=list(axes),
        test_input=np.asarray(x, dtype=np.float32), normalizer=request.normalizer,
        documentation=card, covers=list(request.covers),
        authors=[dict(a) for a in authors] if authors else [dict(a) for a in DEFAULT_AUTHORS],
        cite=[dict(c) for c in cite], license=license, tags=list(request.tags),
        input_description=request.input_description,
        output_description=request.output_description, training_data=request.training_data,
        attachments=list(attachments), claims=tuple(claims),
        training_stats=_training_stats(request, retrain))


def _training_stats(request: PackageRequest, retrain: str) -> dict[str, Any]:
    """``training_stats.json`` of a request: its stats data (or test input) normalised with
    the package's own ``scale_range`` percentiles."""
    n = request.normalizer
    if request.stats_data is not None:
        data, source = np.asarray(request.stats_data), request.stats_source or "export sample"
    else:
        data, source = np.asarray(request.test_input), "the package's test input"
    if data.ndim < 2 or not np.isfinite(data).all():
        raise ValueError(f"training statistics need a finite image (..., Y, X), got shape "
                         f"{data.shape}")
    return training_statistics(data, n.pmin, n.pmax, n.eps, source=source, retrain=retrain)
