"""What the consumer checks share: the findings collected per consumer, facts about the
tensors, the ONNX weights' rules, the halo warning and the plain-string documentation and
covers that deepImageJ and QuPath need."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from .rdf import (Axis, RawPackage, axes_of, file_source, is_param, is_ref, tensor_id_of,
                  torch_version)
from .report import Finding, Severity

class Checker:
    """The facts and rules several consumers share, over one package read raw; each
    consumer's module adds its rules as a subclass (``check_<consumer>``), and
    :func:`~sharpstack.export.consumers.check_package` runs them all on one instance."""

    def __init__(self, pkg: RawPackage):
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
        tv = torch_version(self.weights, "torchscript")
        if tv is not None and tv > limit:
            self.add(consumer, f"{consumer}.torchscript-runtime",
                     f"TorchScript written by torch {tv[0]}.{tv[1]}; {loads_with}",
                     f"{fix_prefix}`python benchmarks/old_runtimes.py PACKAGE`", "warning")

    def add(self, consumer: str, rule: str, message: str, fix: str,
            severity: Severity = "error") -> None:
        finding = Finding(consumer, rule, message, fix, severity)
        self.findings.setdefault(consumer, []).append(finding)

    # ---- shared facts -----------------------------------------------------------------------

    def input_axes_by_tensor(self) -> dict[str, list[Axis]]:
        return {tensor_id_of(t, f"input{i}"): axes_of(t) for i, t in enumerate(self.inputs)}

    def test_input_shape(self, tensor: dict) -> tuple[int, ...] | None:
        src = file_source(tensor.get("test_tensor"))
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
            if tensor_id_of(t, f"input{i}") != tensor_id:
                continue
            axes = axes_of(t)
            shape = self.test_input_shape(t)
            for k, a in enumerate(axes):
                if a.id != axis_id:
                    continue
                if shape is not None and len(shape) == len(axes):
                    return int(shape[k]), a.scale
                if isinstance(a.size, int):
                    return a.size, a.scale
                if is_param(a.size):
                    return int(a.size["min"]) + max(int(a.size["step"]), 0), a.scale
                return None
        return None

    def output_size_formulas(self):
        """Yield (tensor, axis, n_ref, spec_size, jdll_size, ratio) for referenced output axes."""
        for j, t in enumerate(self.outputs):
            for a in axes_of(t):
                if not is_ref(a.size):
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
                yield tensor_id_of(t, f"output{j}"), a, n, spec_size, jdll_size, ref_scale / a.scale

    def onnx_model(self):
        """The ONNX ModelProto of the package's onnx weights (None if absent/unreadable)."""
        if self._onnx_loaded:
            return self._onnx_cache
        self._onnx_loaded = True
        entry = self.weights.get("onnx")
        src = file_source(entry) if isinstance(entry, dict) else None
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
            axes = axes_of(t)
            if len(dims) != len(axes):
                self.add(consumer, "onnx.input-rank",
                         f"ONNX input {graph_inputs[k].name!r} has rank {len(dims)} but tensor "
                         f"{tensor_id_of(t, 'input')!r} has {len(axes)} axes",
                         "export the network with one dimension per rdf axis (b, c, [z,] y, x)",
                         severity)
                continue
            # bioimageio.core's test_model also runs batch sizes > 1 (dynamic_batch).
            fixed = [a.id for a, d in zip(axes, dims, strict=True)
                     if (is_param(a.size) or is_ref(a.size)
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
        has_halo = any(a.halo > 0 for t in self.outputs for a in axes_of(t) if a.type == "space")
        if not has_halo:
            self.add(consumer, f"{consumer}.halo",
                     "no output space axis declares a halo, so tiles are stitched without overlap "
                     f"({source_note}); a convolutional network shows seams",
                     "write halo: <receptive field radius> on every output space axis",
                     "warning")


    # ---- documentation / covers (deepImageJ and QuPath read plain strings) --------------------

    def check_doc_and_covers(self, c: str) -> None:
        doc = self.rdf.get("documentation")
        if doc is not None and not isinstance(doc, str):
            self.add(c, f"{c}.documentation-plain-string",
                     f"`documentation` is a {type(doc).__name__} ({file_source(doc)!r} with "
                     f"sha256), not a plain string; {c} reads a string and fails on the "
                     "{source, sha256} form",
                     f"write `documentation: {file_source(doc) or 'README.md'}` as a plain string "
                     "(post-process the rdf.yaml after bioimageio.spec's save, and write "
                     "`format_version: 0.5.10` so that bioimageio.spec still accepts it)")
        covers = self.rdf.get("covers")
        if covers is not None and (not isinstance(covers, list)
                                   or not all(isinstance(x, str) for x in covers)):
            names = [(file_source(x) or "?") for x in covers] if isinstance(covers, list) else []
            self.add(c, f"{c}.covers-plain-strings",
                     f"`covers` holds {{source, sha256}} mappings; {c} reads a list of strings",
                     f"write `covers: {names}` as plain strings (post-process the rdf.yaml after "
                     "bioimageio.spec's save, with `format_version: 0.5.10`)")
