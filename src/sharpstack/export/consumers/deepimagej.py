"""deepImageJ (Fiji): does the package run there?

deepImageJ 3.x runs models through JDLL (``bioimage-io/JDLL``): model description in
``bioimageio/description/ModelDescriptor*.java``, tiling in ``tiling/TileMaker.java``,
processing in ``transformations/*Transformation.java``; libtorch 2.0.0 and onnxruntime
1.12/1.13 engines.
"""

from __future__ import annotations

import io
from pathlib import PurePosixPath

import numpy as np

from .checker import Checker
from .rdf import (axes_of, file_source, is_param, is_ref, processing_id, processing_steps,
                  tensor_id_of)

# Runtime versions deepImageJ ships (issue 3: JDLL engines).
_TORCH_DEEPIMAGEJ = (2, 0)


_ONNX_MAX_OPSET_DEEPIMAGEJ = 17  # onnxruntime 1.12/1.13 in JDLL implement opsets <= 17
_ONNX_MAX_IR_DEEPIMAGEJ = 8  # ... and ONNX IR versions <= 8
# deepImageJ's CI compares its output to the test output with |d| <= atol + rtol * |expected|.
DEEPIMAGEJ_ATOL = 1.5e-4
DEEPIMAGEJ_RTOL = 1e-4


class DeepImageJChecks(Checker):
    """The deepImageJ rules."""

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
                for a in axes_of(t):
                    if a.type == "space" and not a.explicit_id:
                        self.add(c, "deepimagej.axis-id-explicit",
                                 f"{kind} {tensor_id_of(t, kind)!r} has a space axis without an "
                                 "id; JDLL (AxisV05) refuses it",
                                 "write id: z / y / x on every space axis")
                    elif a.id not in allowed or a.type in ("time", "index"):
                        self.add(c, "deepimagej.axis-ids",
                                 f"{kind} {tensor_id_of(t, kind)!r} has axis {a.id!r} "
                                 f"(type {a.type}); deepImageJ knows only batch, channel, z, y, x",
                                 "remove the axis (e.g. a time axis) or rename it to one of "
                                 "batch, channel, z, y, x")
        # JDLL casts every input to float32 before pre-processing; the tensor reaching the
        # network must therefore be float32.
        for t in self.inputs:
            data = t.get("data")
            dtype = str(data.get("type", "float32")) if isinstance(data, dict) else "float32"
            for p in processing_steps(t, "preprocessing"):
                if processing_id(p) == "ensure_dtype":
                    dtype = str((p.get("kwargs") or {}).get("dtype", dtype))
            if dtype != "float32":
                self.add(c, "deepimagej.float32-input",
                         f"input {tensor_id_of(t, 'input')!r} reaches the network as {dtype}; "
                         "deepImageJ feeds float32",
                         "make the network take float32 (end preprocessing with ensure_dtype "
                         "float32)")
        # Tiling: deepImageJ's default patch = floor((size + 2*halo) / step) * step, and JDLL
        # TileMaker.validateStepMin requires (patch - min) % step == 0, so min must be a multiple
        # of step.
        for t in self.inputs:
            for a in axes_of(t):
                if not is_param(a.size):
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
            for a in axes_of(t):
                if a.type in ("batch", "channel"):
                    continue
                if not (is_ref(a.size) or isinstance(a.size, int)):
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
                for p in processing_steps(t, kind):
                    pid, kw = processing_id(p), p.get("kwargs") or {}
                    where = f"{kind} {pid!r} of {tensor_id_of(t, 'tensor')!r}"
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
            sample = file_source(t.get("sample_tensor"))
            test = file_source(t.get("test_tensor"))
            if sample is None:
                self.add(c, "deepimagej.sample-tiff",
                         f"input {tensor_id_of(t, 'input')!r} has no sample_tensor; deepImageJ's "
                         "CI converts the test .npy to a TIFF itself",
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
