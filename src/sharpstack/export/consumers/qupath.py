"""QuPath: does the package run there?

QuPath parses the rdf.yaml with ``qupath/qupath-bioimageio-spec`` (``Model.java``,
``Resource.java``, ``tensor/Processing.java``) and turns the model into a 2D pixel
classifier in ``qupath/qupath-extension-bioimageio`` (``BioimageIoCommand.java``); DJL with
PyTorch 2.4.
"""

from __future__ import annotations

from .checker import Checker
from .rdf import axes_of, processing_id, processing_steps, tensor_id_of

# The PyTorch version QuPath ships (issue 3: QuPath DJL).
_TORCH_QUPATH = (2, 4)


class QuPathChecks(Checker):
    """The QuPath rules."""

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
            in_axes = axes_of(self.inputs[0])
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
                for p in processing_steps(t, kind):
                    pid, kw = processing_id(p), p.get("kwargs") or {}
                    where = f"{kind} {pid!r} of {tensor_id_of(t, 'tensor')!r}"
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
