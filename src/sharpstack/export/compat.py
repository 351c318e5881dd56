"""Will this bioimage.io package run in Fiji/deepImageJ, ilastik and QuPath?

:func:`check_package` reads a package the way each consumer reads it (the *raw* ``rdf.yaml``,
not bioimageio.spec's pydantic model, plus the weight files inside the package) and answers,
per consumer, whether the package is usable there, with one :class:`Finding` per broken rule
(a stable rule id, the reason, and the fix).

The rules encode what the consumers' own source code does. Each rule names the source it
relies on in a comment (repository and file, as read in the public code):

- deepImageJ 3.x runs models through JDLL (``bioimage-io/JDLL``): model description in
  ``bioimageio/description/ModelDescriptor*.java``, tiling in ``tiling/TileMaker.java``,
  processing in ``transformations/*Transformation.java``; libtorch 2.0.0 and onnxruntime
  1.12/1.13 engines.
- ilastik runs models through tiktorch (``ilastik/tiktorch``: ``converters.py``
  ``InputTensorValidator``, ``server/grpc/inference_servicer.py``) and crops the result in
  ``ilastik/ilastik``: ``lazyflow/operators/tiktorch/classifier.py``; torch 2.7,
  bioimageio.core 0.10.
- QuPath parses the rdf.yaml with ``qupath/qupath-bioimageio-spec`` (``Model.java``,
  ``Resource.java``, ``tensor/Processing.java``) and turns the model into a 2D pixel
  classifier in ``qupath/qupath-extension-bioimageio`` (``BioimageIoCommand.java``); DJL with
  PyTorch 2.4.

Examples
--------
>>> report = check_package("model.zip", ["deepimagej", "qupath"])  # doctest: +SKIP
>>> report.ok()                                                   # doctest: +SKIP
False
>>> print(report.to_text())                                       # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import io
import logging
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import yaml

from ..errors import InputError, PackageError

__all__ = ["CONSUMERS", "Finding", "ConsumerReport", "CompatReport", "check_package"]

logger = logging.getLogger(__name__)

CONSUMERS: tuple[str, ...] = ("bioimageio", "deepimagej", "ilastik", "qupath")

Severity = Literal["error", "warning"]

# Runtime versions the consumers ship (issue 3: JDLL engines, tiktorch env, QuPath DJL).
_TORCH_DEEPIMAGEJ = (2, 0)
_TORCH_ILASTIK = (2, 7)
_TORCH_QUPATH = (2, 4)
_ONNX_MAX_OPSET_DEEPIMAGEJ = 17  # onnxruntime 1.12/1.13 in JDLL implement opsets <= 17
_ONNX_MAX_IR_DEEPIMAGEJ = 8  # ... and ONNX IR versions <= 8
# deepImageJ's CI compares its output to the test output with |d| <= atol + rtol * |expected|.
DEEPIMAGEJ_ATOL = 1.5e-4
DEEPIMAGEJ_RTOL = 1e-4

_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml", "rdf.yml", "model.yaml")


@dataclass(frozen=True)
class Finding:
    """One broken rule for one consumer.

    Attributes
    ----------
    consumer : str
        One of :data:`CONSUMERS`.
    rule : str
        Short stable id, e.g. ``"deepimagej.documentation-plain-string"`` or ``"onnx.opset<=17"``.
    message : str
        What is wrong and why it matters for this consumer.
    fix : str
        What to change in the package.
    severity : {"error", "warning"}
        ``"error"`` makes the package incompatible with the consumer; a ``"warning"`` does not.
    """

    consumer: str
    rule: str
    message: str
    fix: str
    severity: Severity = "error"


@dataclass
class ConsumerReport:
    """The answer for one consumer: compatible or not, and why.

    Attributes
    ----------
    consumer : str
        One of :data:`CONSUMERS`.
    findings : list of Finding
        Errors and warnings for this consumer.
    """

    consumer: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def compatible(self) -> bool:
        """True when no finding for this consumer is an error."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        """The findings with severity ``"error"``."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        """The findings with severity ``"warning"``."""
        return [f for f in self.findings if f.severity == "warning"]


@dataclass
class CompatReport:
    """Per-consumer compatibility of one package.

    Attributes
    ----------
    source : str
        The package that was checked (zip, folder or rdf.yaml).
    consumers : dict of str to ConsumerReport
        One entry per checked consumer, in the order of :data:`CONSUMERS`.
    """

    source: str
    consumers: dict[str, ConsumerReport]

    @property
    def targets(self) -> tuple[str, ...]:
        """The consumers that were checked."""
        return tuple(self.consumers)

    @property
    def compatible(self) -> dict[str, bool]:
        """``{consumer: compatible}`` for every checked consumer."""
        return {name: rep.compatible for name, rep in self.consumers.items()}

    @property
    def findings(self) -> list[Finding]:
        """All findings of all checked consumers."""
        return [f for rep in self.consumers.values() for f in rep.findings]

    def ok(self, targets: Sequence[str] | str | None = None) -> bool:
        """Whether the package is compatible with every consumer in ``targets``.

        Parameters
        ----------
        targets : sequence of str, optional
            Consumers to require; default: every consumer that was checked.

        Returns
        -------
        bool

        Raises
        ------
        InputError
            If a target is unknown or was not checked.
        """
        names = self.targets if targets is None else _normalise_targets(targets)
        missing = [n for n in names if n not in self.consumers]
        if missing:
            raise InputError(
                f"the report has no result for {missing}: it checked {list(self.targets)}; "
                f"run check_package(..., targets={list(names)!r})")
        return all(self.consumers[n].compatible for n in names)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: ``{"source", "ok", "consumers": {name: {...}}}``."""
        return {
            "source": self.source,
            "ok": self.ok(),
            "consumers": {
                name: {"compatible": rep.compatible,
                       "findings": [asdict(f) for f in rep.findings]}
                for name, rep in self.consumers.items()
            },
        }

    def to_text(self) -> str:
        """A readable table: consumer, compatible yes/no, then each finding with its fix."""
        width = max(len("consumer"), *(len(n) for n in self.consumers))
        lines = [f"compatibility of {self.source}", "",
                 f"{'consumer':<{width}}  compatible  errors  warnings",
                 f"{'-' * width}  ----------  ------  --------"]
        for name, rep in self.consumers.items():
            lines.append(f"{name:<{width}}  {'yes' if rep.compatible else 'NO':<10}  "
                         f"{len(rep.errors):>6}  {len(rep.warnings):>8}")
        for name, rep in self.consumers.items():
            if not rep.findings:
                continue
            lines += ["", f"{name}:"]
            for f in sorted(rep.findings, key=lambda f: (f.severity != "error", f.rule)):
                tag = "ERROR" if f.severity == "error" else "warn "
                lines.append(f"  {tag} {f.rule}: {f.message}")
                lines.append(f"        fix: {f.fix}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# reading a package the way the consumers do
# --------------------------------------------------------------------------------------------


class _Package:
    """Raw access to a package: the parsed rdf.yaml dict and the bytes of files inside it."""

    def __init__(self, source: str | Path):
        path = Path(source)
        if not path.exists():
            raise InputError(f"package {str(path)!r} does not exist; give a .zip, a folder or an "
                             "rdf.yaml path")
        from .._trust import refuse_several_descriptions

        refuse_several_descriptions(path)  # bioimageio would load the first (sorted) one
        self.source = path
        self.is_zip = False
        self._zip: zipfile.ZipFile | None = None
        if path.is_file() and zipfile.is_zipfile(path):
            self.is_zip = True
            self._zip = zipfile.ZipFile(path)
            names = set(self._zip.namelist())
            rdf = next((n for n in _RDF_NAMES if n in names), None)
            if rdf is None:
                raise InputError(f"{path} is a zip without an rdf.yaml at its top level; "
                                 "give a bioimage.io package zip")
            self.rdf_name = rdf
            self.root = None
        elif path.is_dir():
            rdf = next((path / n for n in _RDF_NAMES if (path / n).is_file()), None)
            if rdf is None:
                raise InputError(f"folder {path} has no rdf.yaml; give a bioimage.io package "
                                 "folder")
            self.root, self.rdf_name = path, rdf.name
        elif path.suffix.lower() in (".yaml", ".yml"):
            self.root, self.rdf_name = path.parent, path.name
        else:
            raise InputError(f"{path} is neither a zip, a folder nor an rdf.yaml; give a "
                             "bioimage.io package")
        try:
            self.rdf = yaml.safe_load(self.read_bytes(self.rdf_name).decode("utf-8"))
        except UnicodeDecodeError as e:
            raise PackageError(f"{self.rdf_name} in {path} is not UTF-8 text (byte {e.start}); "
                               "a bioimage.io rdf is UTF-8 YAML: the package is damaged, or "
                               "save the file as UTF-8") from None
        except yaml.YAMLError as e:
            raise PackageError(f"{self.rdf_name} in {path} is not valid YAML ({e}); re-export "
                               "the package") from e
        if not isinstance(self.rdf, dict):
            raise PackageError(f"{self.rdf_name} in {path} is not a YAML mapping; re-export the "
                               "package")
        fv = str(self.rdf.get("format_version", ""))
        if self.rdf.get("type") != "model" or not fv.startswith("0.5"):
            raise InputError(
                f"{path} describes type={self.rdf.get('type')!r} format_version={fv!r}; "
                "check_package checks bioimage.io *model* packages of spec 0.5; update older "
                "packages with bioimageio.spec (update_format) or re-export them")

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    @property
    def validation_source(self) -> Path:
        """What to hand to bioimageio.spec / bioimageio.core."""
        if self.is_zip:
            return self.source
        return self.root / self.rdf_name

    def _name(self, rel: str) -> str:
        return str(PurePosixPath(rel.replace("\\", "/")))

    def exists(self, rel: str) -> bool:
        if _is_url(rel):
            return False
        if self._zip is not None:
            return self._name(rel) in self._zip.namelist()
        return (self.root / rel).is_file()

    def read_bytes(self, rel: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(self._name(rel))
        return (self.root / rel).read_bytes()


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def _file_source(entry: Any) -> str | None:
    """The file name of a spec-0.5 file entry (plain string or ``{source, sha256}``)."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("source"), str):
        return entry["source"]
    return None


# --------------------------------------------------------------------------------------------
# raw-yaml helpers for tensors and axes (spec 0.5)
# --------------------------------------------------------------------------------------------

_DEFAULT_AXIS_ID = {"batch": "batch", "channel": "channel", "index": "index", "time": "time",
                    "space": "x"}


@dataclass
class _Axis:
    id: str
    type: str
    explicit_id: bool
    size: Any
    scale: float
    halo: int
    raw: dict


def _axes(tensor: dict) -> list[_Axis]:
    out = []
    for a in tensor.get("axes") or []:
        if not isinstance(a, dict):
            continue
        typ = str(a.get("type", ""))
        aid = a.get("id")
        size = a.get("size")
        if typ == "channel" and size is None:
            size = len(a.get("channel_names") or []) or 1
        if typ == "batch" and size is None:
            size = None
        out.append(_Axis(id=str(aid) if aid is not None else _DEFAULT_AXIS_ID.get(typ, typ),
                         type=typ, explicit_id=aid is not None, size=size,
                         scale=float(a.get("scale", 1.0) or 1.0), halo=int(a.get("halo", 0) or 0),
                         raw=a))
    return out


def _tensor_id(t: dict, default: str) -> str:
    return str(t.get("id", t.get("name", default)))


def _is_param(size: Any) -> bool:
    return isinstance(size, dict) and "min" in size and "step" in size


def _is_ref(size: Any) -> bool:
    return isinstance(size, dict) and "tensor_id" in size and "axis_id" in size


def _processing(tensor: dict, key: str) -> list[dict]:
    return [p for p in (tensor.get(key) or []) if isinstance(p, dict)]


def _proc_id(p: dict) -> str:
    return str(p.get("id", p.get("name", "")))


def _torch_version(weights: dict, fmt: str) -> tuple[int, int] | None:
    entry = weights.get(fmt)
    if not isinstance(entry, dict) or entry.get("pytorch_version") is None:
        return None
    parts = str(entry["pytorch_version"]).split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# the checker
# --------------------------------------------------------------------------------------------


class _Checker:
    def __init__(self, pkg: _Package):
        self.pkg = pkg
        self.rdf = pkg.rdf
        self.inputs = [t for t in (self.rdf.get("inputs") or []) if isinstance(t, dict)]
        self.outputs = [t for t in (self.rdf.get("outputs") or []) if isinstance(t, dict)]
        self.weights = self.rdf.get("weights") if isinstance(self.rdf.get("weights"), dict) else {}
        self.findings: dict[str, list[Finding]] = {}
        self._onnx_cache: Any = None
        self._onnx_error: str | None = None
        self._onnx_loaded = False

    def check_torch_runtime(self, consumer: str, limit: tuple[int, int], loads_with: str,
                            fix_prefix: str = "verify with ") -> None:
        """Warn when the TorchScript was written by a torch newer than the consumer's."""
        tv = _torch_version(self.weights, "torchscript")
        if tv is not None and tv > limit:
            self.add(consumer, f"{consumer}.torchscript-runtime",
                     f"TorchScript written by torch {tv[0]}.{tv[1]}; {loads_with}",
                     f"{fix_prefix}`python benchmarks/old_runtimes.py PACKAGE`", "warning")

    def add(self, consumer: str, rule: str, message: str, fix: str,
            severity: Severity = "error") -> None:
        finding = Finding(consumer, rule, message, fix, severity)
        self.findings.setdefault(consumer, []).append(finding)

    # ---- shared facts -----------------------------------------------------------------------

    def input_axes_by_tensor(self) -> dict[str, list[_Axis]]:
        return {_tensor_id(t, f"input{i}"): _axes(t) for i, t in enumerate(self.inputs)}

    def test_input_shape(self, tensor: dict) -> tuple[int, ...] | None:
        src = _file_source(tensor.get("test_tensor"))
        if src is None or not self.pkg.exists(src):
            return None
        try:
            arr = np.load(io.BytesIO(self.pkg.read_bytes(src)), allow_pickle=False)
        except Exception:  # noqa: BLE001 - a broken test tensor is reported by bioimageio
            return None
        return tuple(arr.shape)

    def reference_size(self, tensor_id: str, axis_id: str) -> tuple[int, float] | None:
        """Input size used to evaluate output size formulas, and that axis' scale."""
        for i, t in enumerate(self.inputs):
            if _tensor_id(t, f"input{i}") != tensor_id:
                continue
            axes = _axes(t)
            shape = self.test_input_shape(t)
            for k, a in enumerate(axes):
                if a.id != axis_id:
                    continue
                if shape is not None and len(shape) == len(axes):
                    return int(shape[k]), a.scale
                if isinstance(a.size, int):
                    return a.size, a.scale
                if _is_param(a.size):
                    return int(a.size["min"]) + max(int(a.size["step"]), 0), a.scale
                return None
        return None

    def output_size_formulas(self):
        """Yield (tensor, axis, n_ref, spec_size, jdll_size, ratio) for referenced output axes."""
        for j, t in enumerate(self.outputs):
            for a in _axes(t):
                if not _is_ref(a.size):
                    continue
                ref = self.reference_size(str(a.size["tensor_id"]), str(a.size["axis_id"]))
                if ref is None:
                    continue
                n, ref_scale = ref
                offset = int(a.size.get("offset", 0) or 0)
                # bioimageio.spec v0_5.SizeReference:
                #   size = ref.size * ref.scale / axis.scale + offset
                spec_size = n * ref_scale / a.scale + offset
                # JDLL TileMaker.getOutputTiles: tile = ref_tile * axis.scale + 2 * offset
                jdll_size = int(n * a.scale + 2 * offset)
                yield _tensor_id(t, f"output{j}"), a, n, spec_size, jdll_size, ref_scale / a.scale

    def onnx_model(self):
        """The ONNX ModelProto of the package's onnx weights (None if absent/unreadable)."""
        if self._onnx_loaded:
            return self._onnx_cache
        self._onnx_loaded = True
        entry = self.weights.get("onnx")
        src = _file_source(entry) if isinstance(entry, dict) else None
        if src is None:
            return None
        try:
            import onnx

            self._onnx_cache = onnx.load_model_from_string(self.pkg.read_bytes(src))
        except Exception as e:  # noqa: BLE001 - reported as a finding
            self._onnx_error = f"{type(e).__name__}: {e}"
        return self._onnx_cache

    # ---- onnx rules (used by several consumers) -----------------------------------------------

    def check_onnx(self, consumer: str, *, max_opset: int | None, max_ir: int | None,
                   severity: Severity = "error", dynamic_batch: bool = False) -> None:
        if "onnx" not in self.weights:
            return
        model = self.onnx_model()
        if model is None:
            self.add(consumer, "onnx.readable",
                     f"the onnx weights could not be read ({self._onnx_error or 'file missing'})",
                     "re-export the ONNX weights and repackage", severity)
            return
        opsets = {imp.domain: imp.version for imp in model.opset_import}
        opset = opsets.get("", opsets.get("ai.onnx"))
        declared = self.weights["onnx"].get("opset_version")
        if declared is not None and opset is not None and int(declared) != int(opset):
            self.add(consumer, "onnx.opset-declared",
                     f"rdf.yaml declares opset_version {declared} but the ONNX file imports opset "
                     f"{opset}", f"write opset_version: {opset} in the rdf.yaml", "warning")
        if max_opset is not None and opset is not None and opset > max_opset:
            # JDLL's onnxruntime engines are 1.12/1.13: they implement ONNX opsets <= 17.
            self.add(consumer, f"onnx.opset<={max_opset}",
                     f"the ONNX file uses opset {opset}; {consumer}'s onnxruntime (1.12-1.13) "
                     f"runs opset <= {max_opset} only",
                     f"export with torch.onnx.export(..., opset_version={max_opset}, dynamo=False)",
                     severity)
        if max_ir is not None and model.ir_version > max_ir:
            # onnxruntime 1.13 reads ONNX IR version <= 8 (onnx 1.13 writes IR 8 for opset 17).
            self.add(consumer, f"onnx.ir<={max_ir}",
                     f"the ONNX file has IR version {model.ir_version}; {consumer}'s onnxruntime "
                     f"(1.12-1.13) reads IR version <= {max_ir}",
                     f"set model.ir_version = {max_ir} (onnx.load, edit, onnx.save) after export; "
                     "opset 17 graphs are valid IR 8", severity)
        # Dynamic axes: every parameterised input axis must be symbolic in the graph input.
        init_names = {i.name for i in model.graph.initializer}
        graph_inputs = [i for i in model.graph.input if i.name not in init_names]
        for k, t in enumerate(self.inputs):
            if k >= len(graph_inputs):
                self.add(consumer, "onnx.inputs",
                         f"the ONNX graph has {len(graph_inputs)} input(s) but rdf.yaml describes "
                         f"{len(self.inputs)}", "re-export the ONNX weights from the deploy module",
                         severity)
                break
            dims = graph_inputs[k].type.tensor_type.shape.dim
            axes = _axes(t)
            if len(dims) != len(axes):
                self.add(consumer, "onnx.input-rank",
                         f"ONNX input {graph_inputs[k].name!r} has rank {len(dims)} but tensor "
                         f"{_tensor_id(t, 'input')!r} has {len(axes)} axes",
                         "export the network with one dimension per rdf axis (b, c, [z,] y, x)",
                         severity)
                continue
            # bioimageio.core's test_model also runs batch sizes > 1 (dynamic_batch).
            fixed = [a.id for a, d in zip(axes, dims, strict=True)
                     if (_is_param(a.size) or _is_ref(a.size)
                         or (dynamic_batch and a.type == "batch" and a.size is None))
                     and d.HasField("dim_value")]
            if fixed:
                self.add(consumer, "onnx.dynamic-axes",
                         f"ONNX input {graph_inputs[k].name!r} has fixed sizes along {fixed}, "
                         "which rdf.yaml declares parameterised (min + n*step): other tile "
                         "sizes fail",
                         "pass dynamic_axes={input: {i: name, ...}, output: {...}} for every "
                         "parameterised axis (and the batch axis) to torch.onnx.export", severity)

    def halo_warning(self, consumer: str, source_note: str) -> None:
        has_halo = any(a.halo > 0 for t in self.outputs for a in _axes(t) if a.type == "space")
        if not has_halo:
            self.add(consumer, f"{consumer}.halo",
                     "no output space axis declares a halo, so tiles are stitched without overlap "
                     f"({source_note}); a convolutional network shows seams",
                     "write halo: <receptive field radius> on every output space axis",
                     "warning")

    # ---- deepImageJ ---------------------------------------------------------------------------

    def check_deepimagej(self) -> None:
        c = "deepimagej"
        rdf = self.rdf
        # deepImageJ 3.x (Fiji) runs one image per model call: one input tensor.
        if len(self.inputs) != 1:
            self.add(c, "deepimagej.one-input",
                     f"the model has {len(self.inputs)} inputs; deepImageJ feeds exactly one image",
                     "export a deploy module with a single input tensor")
        # Weight formats: JDLL engines = torchscript (libtorch 2.0.0), onnx, tensorflow. A
        # pytorch_state_dict needs JDLL's Python side environment
        # (JDLL ModelDescriptorV05.areRequirementsInstalled -> DLModelPytorchProtected).
        usable = [w for w in ("torchscript", "onnx", "tensorflow_saved_model_bundle")
                  if w in self.weights]
        if not usable:
            only_sd = set(self.weights) == {"pytorch_state_dict"}
            self.add(c, "deepimagej.weights-format",
                     f"weights {sorted(self.weights)}: deepImageJ runs torchscript, onnx or "
                     "tensorflow" + ("; a state-dict-only package needs JDLL's Python side "
                                     "environment" if only_sd else ""),
                     "add torchscript (torch.jit.trace) and onnx (opset 17) weights")
        self.check_torch_runtime(c, _TORCH_DEEPIMAGEJ, "deepImageJ loads it with libtorch 2.0.0",
                                 "export with torch.jit.trace (not script) and verify with ")
        self.check_onnx(c, max_opset=_ONNX_MAX_OPSET_DEEPIMAGEJ, max_ir=_ONNX_MAX_IR_DEEPIMAGEJ)

        # Axis ids: JDLL maps axes to the letters b, c, z, y, x (AxisV05: a space axis needs an
        # explicit id; other ids such as t or index have no image dimension in deepImageJ).
        allowed = {"batch", "channel", "z", "y", "x"}
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            for t in tensors:
                for a in _axes(t):
                    if a.type == "space" and not a.explicit_id:
                        self.add(c, "deepimagej.axis-id-explicit",
                                 f"{kind} {_tensor_id(t, kind)!r} has a space axis without an id; "
                                 "JDLL (AxisV05) refuses it",
                                 "write id: z / y / x on every space axis")
                    elif a.id not in allowed or a.type in ("time", "index"):
                        self.add(c, "deepimagej.axis-ids",
                                 f"{kind} {_tensor_id(t, kind)!r} has axis {a.id!r} "
                                 f"(type {a.type}); deepImageJ knows only batch, channel, z, y, x",
                                 "remove the axis (e.g. a time axis) or rename it to one of "
                                 "batch, channel, z, y, x")
        # JDLL casts every input to float32 before pre-processing; the tensor reaching the
        # network must therefore be float32.
        for t in self.inputs:
            data = t.get("data")
            dtype = str(data.get("type", "float32")) if isinstance(data, dict) else "float32"
            for p in _processing(t, "preprocessing"):
                if _proc_id(p) == "ensure_dtype":
                    dtype = str((p.get("kwargs") or {}).get("dtype", dtype))
            if dtype != "float32":
                self.add(c, "deepimagej.float32-input",
                         f"input {_tensor_id(t, 'input')!r} reaches the network as {dtype}; "
                         "deepImageJ feeds float32",
                         "make the network take float32 (end preprocessing with ensure_dtype "
                         "float32)")
        # Tiling: deepImageJ's default patch = floor((size + 2*halo) / step) * step, and JDLL
        # TileMaker.validateStepMin requires (patch - min) % step == 0, so min must be a multiple
        # of step.
        for t in self.inputs:
            for a in _axes(t):
                if not _is_param(a.size):
                    continue
                mn, st = int(a.size["min"]), int(a.size["step"])
                if st > 0 and mn % st:
                    self.add(c, "deepimagej.min-multiple-of-step",
                             f"input axis {a.id!r}: min {a.size['min']} is not a multiple of step "
                             f"{a.size['step']}; deepImageJ's patches are multiples of step and "
                             "fail JDLL's (patch - min) % step check",
                             f"use min = {st * max(1, mn // st)} (a multiple of step {st})")
        # Output sizes: JDLL TileMaker.getOutputTiles needs a SizeReference (or a fixed size) on
        # every output axis and computes tile = ref * axis.scale + 2 * offset, whereas the spec
        # says ref * ref.scale / axis.scale + offset.
        for t in self.outputs:
            for a in _axes(t):
                if a.type in ("batch", "channel"):
                    continue
                if not (_is_ref(a.size) or isinstance(a.size, int)):
                    self.add(c, "deepimagej.output-size-reference",
                             f"output axis {a.id!r} has size {a.size!r}; JDLL needs a reference "
                             "to an input axis ('Model specs too complex for JDLL')",
                             "write size: {tensor_id: <input>, axis_id: <axis>} with offset 0")
        for tid, a, n, spec_size, jdll_size, ratio in self.output_size_formulas():
            if abs(spec_size - jdll_size) < 1e-9:
                continue
            if abs(ratio - 1.0) > 1e-9:
                self.add(c, "deepimagej.output-scale",
                         f"output {tid!r} axis {a.id!r} is scaled x{ratio:g} relative to its "
                         f"reference: the network returns {spec_size:g} for an input of {n}, but "
                         f"deepImageJ (JDLL TileMaker) computes ref*axis.scale + 2*offset = "
                         f"{jdll_size} and cuts/places tiles with that size: the result is "
                         "wrong",
                         "ship the same-shape deployable for deepImageJ (input resampled to "
                         "isotropic voxels, output scale equal to input scale); keep the "
                         "upsampling deployable for bioimageio.core / sharpstack predict")
            else:
                self.add(c, "deepimagej.output-offset",
                         f"output {tid!r} axis {a.id!r} has offset {a.size.get('offset')}; JDLL "
                         f"computes ref*scale + 2*offset = {jdll_size} instead of {spec_size:g}",
                         "crop inside the network and write offset: 0")
        self.halo_warning(c, "JDLL derives the input halo from the output halo")
        # documentation / covers: JDLL ModelDescriptor casts documentation to String and covers
        # to List<String>; bioimageio.spec >= 0.5.12 writes {source, sha256} mappings.
        self.check_doc_and_covers(c)
        # config: JDLL ModelDescriptorV05.findID returns config.bioimageio.nickname or the
        # top-level id; with a config section holding neither, modelID is null and
        # modelID.length() throws (without any config JDLL invents a "friend-N" nickname).
        cfg = rdf.get("config")
        if cfg is not None:
            bio = cfg.get("bioimageio") if isinstance(cfg, dict) else None
            nick = bio.get("nickname") if isinstance(bio, dict) else None
            if rdf.get("id") is None and nick is None:
                self.add(c, "deepimagej.config-needs-id",
                         "the rdf.yaml has a `config` section but neither `id` nor "
                         "`config.bioimageio.nickname`: JDLL's model id is null and deepImageJ "
                         "crashes (NullPointerException in ModelDescriptorV05)",
                         "drop the `config` section, or add config.bioimageio.nickname")
        self.check_deepimagej_processing()
        self.check_deepimagej_sample()

    def check_deepimagej_processing(self) -> None:
        c = "deepimagej"
        # JDLL transformations/: Binarize, Clip, ScaleLinear, ScaleRange, ZeroMeanUnitVariance,
        # FixedZeroMeanUnitVariance, Sigmoid (+ EnsureDtype, which every spec-0.5.12 package has).
        supported = {"binarize", "clip", "scale_linear", "scale_range", "zero_mean_unit_variance",
                     "fixed_zero_mean_unit_variance", "sigmoid", "ensure_dtype"}
        for kind, tensors in (("preprocessing", self.inputs), ("postprocessing", self.outputs)):
            for t in tensors:
                for p in _processing(t, kind):
                    pid, kw = _proc_id(p), p.get("kwargs") or {}
                    where = f"{kind} {pid!r} of {_tensor_id(t, 'tensor')!r}"
                    if pid not in supported:
                        self.add(c, "deepimagej.processing-supported",
                                 f"{where} is not implemented in JDLL",
                                 "use only binarize, clip, scale_linear, scale_range, "
                                 "(fixed_)zero_mean_unit_variance, sigmoid, or move it into the "
                                 "network")
                    elif pid == "binarize" and not isinstance(kw.get("threshold"), (int, float)):
                        self.add(c, "deepimagej.binarize-scalar",
                                 f"{where}: JDLL's binarize takes one scalar threshold",
                                 "write kwargs: {threshold: <number>}")
                    elif pid == "clip" and ("min" not in kw or "max" not in kw):
                        self.add(c, "deepimagej.clip-min-max",
                                 f"{where} lacks {'min' if 'min' not in kw else 'max'}",
                                 "write both min and max")
                    elif pid == "scale_linear" and ("gain" not in kw or "offset" not in kw):
                        self.add(c, "deepimagej.scale-linear-gain-offset",
                                 f"{where} lacks {'gain' if 'gain' not in kw else 'offset'}; JDLL "
                                 "(ScaleLinearTransformation.checkRequiredArgs) needs both of the "
                                 "same kind",
                                 "write both gain and offset (post-process the rdf.yaml: "
                                 "bioimageio.spec omits default values)")
                    elif pid == "scale_range":
                        if "min_percentile" not in kw or "max_percentile" not in kw:
                            lacks = [k for k in ("min_percentile", "max_percentile")
                                     if k not in kw]
                            self.add(c, "deepimagej.scale-range-percentiles",
                                     f"{where} lacks {' and '.join(lacks)}",
                                     "write both min_percentile and max_percentile (post-process "
                                     "the rdf.yaml: bioimageio.spec omits default values)")
                        if kw.get("reference_tensor") is not None:
                            self.add(c, "deepimagej.scale-range-reference-tensor",
                                     f"{where} uses reference_tensor, which JDLL's "
                                     "ScaleRangeTransformation does not support",
                                     "drop reference_tensor (normalise the tensor itself)")

    def check_deepimagej_sample(self) -> None:
        c = "deepimagej"
        # deepImageJ's CI opens sample_tensor (else the test .npy converted) as a TIFF, runs
        # the model and compares with the test output (|d| <= 1.5e-4 + 1e-4*|expected|).
        for t in self.inputs[:1]:
            sample = _file_source(t.get("sample_tensor"))
            test = _file_source(t.get("test_tensor"))
            if sample is None:
                self.add(c, "deepimagej.sample-tiff",
                         f"input {_tensor_id(t, 'input')!r} has no sample_tensor; deepImageJ's CI "
                         "converts the test .npy to a TIFF itself",
                         "ship sample_tensor: a TIFF identical to the test input", "warning")
                continue
            if PurePosixPath(sample).suffix.lower() not in (".tif", ".tiff"):
                self.add(c, "deepimagej.sample-tiff",
                         f"sample_tensor {sample!r} is not a TIFF; deepImageJ opens it as an image",
                         "write the sample_tensor as .tif (same data as the test input)")
                continue
            if test is None or not (self.pkg.exists(sample) and self.pkg.exists(test)):
                continue
            try:
                import tifffile

                s = tifffile.imread(io.BytesIO(self.pkg.read_bytes(sample)))
                x = np.load(io.BytesIO(self.pkg.read_bytes(test)), allow_pickle=False)
            except Exception as e:  # noqa: BLE001 - reported as a finding
                self.add(c, "deepimagej.sample-tiff", f"sample/test tensor unreadable ({e})",
                         "rewrite the sample TIFF from the test input")
                continue
            if np.squeeze(s).shape != np.squeeze(x).shape or not np.allclose(
                    np.squeeze(s).astype(np.float64), np.squeeze(x).astype(np.float64),
                    rtol=0, atol=0):
                self.add(c, "deepimagej.sample-matches-test-input",
                         f"sample TIFF {sample!r} (shape {s.shape}) differs from the test input "
                         f"(shape {x.shape}); deepImageJ's CI runs the sample and compares with "
                         "the test output",
                         "write the sample TIFF from exactly the test input array")

    # ---- documentation / covers (deepImageJ and QuPath read plain strings) --------------------

    def check_doc_and_covers(self, c: str) -> None:
        doc = self.rdf.get("documentation")
        if doc is not None and not isinstance(doc, str):
            self.add(c, f"{c}.documentation-plain-string",
                     f"`documentation` is a {type(doc).__name__} ({_file_source(doc)!r} with "
                     f"sha256), not a plain string; {c} reads a string and fails on the "
                     "{source, sha256} form",
                     f"write `documentation: {_file_source(doc) or 'README.md'}` as a plain string "
                     "(post-process the rdf.yaml after bioimageio.spec's save, and write "
                     "`format_version: 0.5.10` so that bioimageio.spec still accepts it)")
        covers = self.rdf.get("covers")
        if covers is not None and (not isinstance(covers, list)
                                   or not all(isinstance(x, str) for x in covers)):
            names = [(_file_source(x) or "?") for x in covers] if isinstance(covers, list) else []
            self.add(c, f"{c}.covers-plain-strings",
                     f"`covers` holds {{source, sha256}} mappings; {c} reads a list of strings",
                     f"write `covers: {names}` as plain strings (post-process the rdf.yaml after "
                     "bioimageio.spec's save, with `format_version: 0.5.10`)")

    # ---- ilastik ------------------------------------------------------------------------------

    def check_ilastik(self) -> None:
        c = "ilastik"
        # ilastik's neural network workflow (tiktorch) handles one input and one output.
        if len(self.inputs) != 1:
            self.add(c, "ilastik.one-input",
                     f"the model has {len(self.inputs)} inputs; ilastik feeds one image",
                     "export a deploy module with a single input tensor")
        if len(self.outputs) != 1:
            self.add(c, "ilastik.one-output",
                     f"the model has {len(self.outputs)} outputs; ilastik shows one",
                     "export a deploy module with a single output tensor")
        # tiktorch runs torch models (torchscript or pytorch_state_dict) with torch 2.7.
        if not any(w in self.weights for w in ("torchscript", "pytorch_state_dict")):
            self.add(c, "ilastik.weights-format",
                     f"weights {sorted(self.weights)}: ilastik (tiktorch) runs torchscript or "
                     "pytorch_state_dict",
                     "add torchscript weights (torch.jit.trace)")
        self.check_torch_runtime(c, _TORCH_ILASTIK, "ilastik loads it with torch 2.7")
        if self.inputs:
            in_axes = _axes(self.inputs[0])
            n_space = sum(a.type == "space" for a in in_axes)
            if n_space not in (2, 3):
                self.add(c, "ilastik.space-axes",
                         f"the input has {n_space} space axes; ilastik handles 2D (yx) or 3D "
                         "(zyx) data", "describe the input with y, x or z, y, x space axes")
            for a in in_axes:
                if a.type in ("time", "index"):
                    self.add(c, "ilastik.axis-ids",
                             f"input axis {a.id!r} (type {a.type}) is not an image axis ilastik "
                             "can feed", "use only batch, channel and space axes")
                if a.type == "space" and not (isinstance(a.size, int) or _is_param(a.size)):
                    # tiktorch InputTensorValidator: a size is fixed or min + n*step.
                    self.add(c, "ilastik.input-size",
                             f"input axis {a.id!r} has size {a.size!r}; tiktorch accepts a fixed "
                             "size or min + n*step", "write size: {min: m, step: s}")
            if self.outputs:
                out_axes = _axes(self.outputs[0])
                # classifier.py ModelSession.predict reorders the output by its axes and adds a
                # channel axis only as a fallback; the output must carry a channel axis.
                if not any(a.type == "channel" for a in out_axes):
                    self.add(c, "ilastik.output-channel",
                             "the output has no channel axis; ilastik shows outputs as channels",
                             "add a channel axis to the output")
                in_order = [a.id for a in in_axes if a.type != "channel"]
                out_order = [a.id for a in out_axes if a.type != "channel"]
                if out_order != in_order:
                    self.add(c, "ilastik.output-axis-order",
                             f"output axes {out_order} are not in the input's order {in_order}",
                             "permute the output inside the network to the input's axis order")
                # classifier.py crops the output with the input-space ROI, so the output must
                # have the input tile's spatial shape (scale 1, offset 0).
                for tid, a, n, spec_size, _jdll, ratio in self.output_size_formulas():
                    if abs(spec_size - n) > 1e-9:
                        self.add(c, "ilastik.output-scale",
                                 f"output {tid!r} axis {a.id!r} has size {spec_size:g} for an "
                                 f"input of {n} (scale x{ratio:g}); ilastik crops the output with "
                                 "the input-space ROI (lazyflow classifier.py), so it must have "
                                 "the input's shape",
                                 "ship the same-shape deployable (input resampled to isotropic "
                                 "voxels) for ilastik")
                channels = [a for a in out_axes if a.type == "channel"]
                if channels and all(a.size == 1 for a in channels):
                    self.add(c, "ilastik.single-channel-output",
                             "ilastik treats a single-channel output as a probability map and "
                             "adds a '1 - p' channel (lazyflow classifier.py)",
                             "look at channel 0 of the prediction in ilastik", "warning")
        self.halo_warning(c, "ilastik reads the halo from the output axes")

    # ---- QuPath -------------------------------------------------------------------------------

    def check_qupath(self) -> None:
        c = "qupath"
        if len(self.inputs) != 1:
            self.add(c, "qupath.one-input",
                     f"the model has {len(self.inputs)} inputs; QuPath feeds one image tile",
                     "export a deploy module with a single input tensor")
        # QuPath (DJL) runs torchscript with PyTorch 2.4; onnx needs an extra DJL engine;
        # no state dict support.
        if "torchscript" not in self.weights:
            if "onnx" in self.weights:
                self.add(c, "qupath.weights-format",
                         "only onnx weights: QuPath runs them only with the extra DJL "
                         "OnnxRuntime engine installed", "add torchscript weights", "warning")
            else:
                self.add(c, "qupath.weights-format",
                         f"weights {sorted(self.weights)}: QuPath runs torchscript (or onnx with "
                         "an extra engine), not a state dict",
                         "add torchscript weights (torch.jit.trace)")
        self.check_torch_runtime(c, _TORCH_QUPATH, "QuPath loads it with PyTorch 2.4 (DJL)")
        if self.inputs:
            in_axes = _axes(self.inputs[0])
            if not any(a.type == "channel" for a in in_axes):
                self.add(c, "qupath.input-channel-axis",
                         "the input has no channel axis; QuPath maps image channels onto it",
                         "add a channel axis to the input")
            space = [a.id for a in in_axes if a.type == "space"]
            if len(space) > 2:
                # qupath-extension-bioimageio BioimageIoCommand builds a pixel classifier that
                # runs the model on 2D tiles (tile width x height).
                self.add(c, "qupath.2d-only",
                         f"the input has space axes {space}: QuPath runs 2D models on image "
                         "tiles (it builds a pixel classifier with a tile width and height), so "
                         "a 3D model cannot run there",
                         "no fix in the package: use deepImageJ or ilastik for 3D models (a 2D "
                         "per-slice model would be a different deployable)")
        # qupath-bioimageio-spec Resource.deserializeResourceFields: required fields.
        for key in ("format_version", "name", "description", "authors", "license",
                    "documentation"):
            if self.rdf.get(key) in (None, "", []):
                self.add(c, "qupath.required-fields",
                         f"`{key}` is missing; QuPath's parser requires it", f"write `{key}`")
        self.check_doc_and_covers(c)
        for kind, tensors in (("preprocessing", self.inputs), ("postprocessing", self.outputs)):
            for t in tensors:
                for p in _processing(t, kind):
                    pid, kw = _proc_id(p), p.get("kwargs") or {}
                    where = f"{kind} {pid!r} of {_tensor_id(t, 'tensor')!r}"
                    if pid == "scale_range" and ("min_percentile" not in kw
                                                 or "max_percentile" not in kw):
                        # tensor/Processing.java: missing max_percentile defaults to 0.0 and
                        # missing min_percentile to 100.0 -- the range is inverted.
                        self.add(c, "qupath.scale-range-percentiles",
                                 f"{where} lacks a percentile; QuPath's defaults are swapped "
                                 "(max 0, min 100) and invert the normalisation",
                                 "write both min_percentile and max_percentile")
                    elif pid == "binarize" and not isinstance(kw.get("threshold"), (int, float)):
                        self.add(c, "qupath.binarize-threshold",
                                 f"{where}: QuPath requires a scalar threshold",
                                 "write kwargs: {threshold: <number>}")
                    elif pid == "scale_linear" and not all(
                            isinstance(kw.get(k), list) for k in ("gain", "offset") if k in kw):
                        # tensor/Processing.java reads gain/offset as double[] through a
                        # deserializer that rejects scalars ("Can't parse data range").
                        self.add(c, "qupath.scale-linear-scalar",
                                 f"{where} writes a scalar gain/offset; QuPath's parser reads "
                                 "them as arrays and may reject scalars",
                                 "fold the scaling into the network, or test the package in QuPath",
                                 "warning")

    # ---- bioimage.io --------------------------------------------------------------------------

    def check_plain_string_format_version(self) -> None:
        # bioimageio.spec (model/v0_5.py ModelDescr._convert_from_older_format) turns plain
        # `documentation`/`covers` strings into {source} only for format_version 0.5.x, x < 11;
        # a 0.5.11+ rdf.yaml with plain strings is rejected ("valid dictionary or FileDescr").
        doc, covers = self.rdf.get("documentation"), self.rdf.get("covers")
        plain = isinstance(doc, str) or (isinstance(covers, list)
                                         and any(isinstance(x, str) for x in covers))
        fv = _format_patch(str(self.rdf.get("format_version", "")))
        if plain and fv is not None and fv[:2] == (0, 5) and fv[2] >= 11:
            self.add("bioimageio", "bioimageio.plain-strings-need-format-0.5.10",
                     f"`documentation`/`covers` are plain strings but format_version is "
                     f"{self.rdf.get('format_version')}; bioimageio.spec converts plain strings "
                     "only for format_version < 0.5.11 and rejects this rdf.yaml",
                     "write `format_version: 0.5.10` together with the plain strings (bioimageio"
                     ".spec then converts them and validates the package as 0.5.12)")

    def check_bioimageio(self, run_test: bool, trust_code: bool = False) -> None:
        c = "bioimageio"
        from bioimageio.spec import load_description

        from .._trust import odd_value, weight_files

        odd = odd_value(self.rdf, "")
        if odd is not None:
            self.add(c, "bioimageio.plain-yaml",
                     f"`{odd[0]}` holds a YAML {odd[1]}, which bioimageio.spec cannot read",
                     "write that entry as text, a number, a list or a mapping")
            return
        remote = {f: why for f, why in weight_files(self.pkg.validation_source, self.rdf).items()
                  if "URL" in why}
        if remote:
            self.add(c, "bioimageio.offline",
                     "not checked offline: " + "; ".join(f"{f} weights: {why}"
                                                         for f, why in remote.items()),
                     "download the complete package (from the model zoo: `bioimageio package "
                     "ID`) and check that")
            return
        try:
            descr = load_description(self.pkg.validation_source, perform_io_checks=True)
        except Exception as e:  # noqa: BLE001 - reported as a finding
            self.add(c, "bioimageio.spec-valid", f"bioimageio.spec could not load it: {e}",
                     "re-export the package with sharpstack's exporter")
            return
        summary = getattr(descr, "validation_summary", None)
        if type(descr).__name__ == "InvalidDescr" or (summary is not None
                                                        and summary.status == "failed"):
            msgs = _summary_messages(summary, "errors")
            self.add(c, "bioimageio.spec-valid",
                     "bioimageio.spec rejects the package: " + ("; ".join(msgs[:5]) or "invalid"),
                     "fix the listed fields and re-export")
        elif summary is not None:
            for m in _summary_messages(summary, "warnings")[:10]:
                self.add(c, "bioimageio.spec-warning", m, "see the bioimageio.spec warning",
                         "warning")
        self.check_plain_string_format_version()
        self.check_onnx(c, max_opset=None, max_ir=None, dynamic_batch=True)
        if run_test and type(descr).__name__ != "InvalidDescr":
            from bioimageio.core import test_model

            for wf in sorted(self.weights):
                if wf == "pytorch_state_dict" and not trust_code:
                    from .._trust import state_dict_code

                    code = state_dict_code(self.pkg.validation_source)
                    if code.runs_package_code:
                        self.add(c, "bioimageio.test-model:pytorch_state_dict-skipped",
                                 f"not tested: {code.reason}", "pass --trust-code to test it",
                                 "warning")
                        continue
                try:
                    s = test_model(self.pkg.validation_source, weight_format=wf)
                except Exception as e:  # noqa: BLE001 - reported as a finding
                    self.add(c, f"bioimageio.test-model:{wf}", f"test_model raised {e}",
                             f"fix the {wf} weights and re-export")
                    continue
                if s.status != "passed":
                    msgs = _summary_messages(s, "errors")
                    self.add(c, f"bioimageio.test-model:{wf}",
                             f"bioimageio.core test_model failed for {wf}: "
                             + ("; ".join(msgs[:3]) or s.status),
                             f"recompute the test output with bioimageio.core or fix the {wf} "
                             "weights")
                    continue
                from .package import non_finite_output

                problem = non_finite_output(self.pkg.validation_source, wf)
                if problem:
                    self.add(c, f"bioimageio.test-model:{wf}", problem,
                             f"get the package again or re-export it with sound {wf} weights")


def _format_patch(fv: str) -> tuple[int, int, int] | None:
    try:
        parts = [int(p) for p in str(fv).split(".")[:3]]
    except ValueError:
        return None
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def _summary_messages(summary: Any, kind: str) -> list[str]:
    """Messages of a bioimageio ValidationSummary's failed details (``kind``: errors/warnings)."""
    out: list[str] = []
    if summary is None:
        return out
    for d in getattr(summary, "details", []) or []:
        for e in getattr(d, kind, []) or []:
            loc = ".".join(str(x) for x in getattr(e, "loc", ()) or ())
            msg = f"{loc}: {e.msg}" if loc else str(e.msg)
            if msg not in out:
                out.append(msg)
    return out


def _normalise_targets(targets: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(targets, str):
        targets = [targets]
    names: list[str] = []
    for t in targets:
        key = str(t).strip().lower().replace("-", "").replace("_", "").replace(".", "")
        alias = {"bioimageio": "bioimageio", "bioimageiocore": "bioimageio",
                 "deepimagej": "deepimagej", "fiji": "deepimagej", "ilastik": "ilastik",
                 "qupath": "qupath"}.get(key)
        if alias is None:
            guess = difflib.get_close_matches(str(t).lower(), CONSUMERS, n=1, cutoff=0.5)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            raise InputError(f"unknown consumer {t!r}{hint} Choose from {', '.join(CONSUMERS)}")
        if alias not in names:
            names.append(alias)
    return tuple(names)


def check_package(source: str | Path, targets: Sequence[str] | str | None = None, *,
                  run_bioimageio_test: bool = False, trust_code: bool = False) -> CompatReport:
    """Check whether a bioimage.io model package runs in each consumer.

    Parameters
    ----------
    source : str or Path
        A package ``.zip``, an unzipped package folder, or the path of its ``rdf.yaml``.
    targets : sequence of str, optional
        Consumers to check, from :data:`CONSUMERS` (``"bioimageio"``, ``"deepimagej"``,
        ``"ilastik"``, ``"qupath"``); default: all of them.
    run_bioimageio_test : bool
        For ``"bioimageio"``: also run ``bioimageio.core.test_model`` for every weight format
        (seconds to minutes). Without it only the offline spec validation runs.
    trust_code : bool
        Also test ``pytorch_state_dict`` weights whose architecture code comes with the
        package (importing it runs that code); otherwise they are skipped with a warning.

    Returns
    -------
    CompatReport
        ``report.compatible[consumer]`` and the findings (rule, reason, fix) per consumer.

    Raises
    ------
    InputError
        If ``source`` is not a spec-0.5 model package, or a target name is unknown (the
        message suggests the closest name).
    PackageError
        If the rdf.yaml is not readable YAML.
    """
    names = CONSUMERS if targets is None else _normalise_targets(targets)
    pkg = _Package(source)
    try:
        checker = _Checker(pkg)
        for name in names:
            if name == "bioimageio":
                checker.check_bioimageio(run_bioimageio_test, trust_code)
            elif name == "deepimagej":
                checker.check_deepimagej()
            elif name == "ilastik":
                checker.check_ilastik()
            elif name == "qupath":
                checker.check_qupath()
        reports = {n: ConsumerReport(n, sorted(_dedupe(checker.findings.get(n, [])),
                                               key=lambda f: (f.severity != "error", f.rule)))
                   for n in CONSUMERS if n in names}
    finally:
        pkg.close()
    return CompatReport(source=str(source), consumers=reports)


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen, out = set(), []
    for f in findings:
        key = (f.rule, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
