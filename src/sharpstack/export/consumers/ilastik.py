"""ilastik: does the package run there?

ilastik runs models through tiktorch (``ilastik/tiktorch``: ``converters.py``
``InputTensorValidator``, ``server/grpc/inference_servicer.py``) and crops the result in
``ilastik/ilastik``: ``lazyflow/operators/tiktorch/classifier.py``; torch 2.7,
bioimageio.core 0.10.
"""

from __future__ import annotations

from .checker import Checker
from .rdf import axes_of, is_param

# The torch version ilastik ships (issue 3: tiktorch env).
_TORCH_ILASTIK = (2, 7)


class IlastikChecks(Checker):
    """The ilastik rules."""

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
            in_axes = axes_of(self.inputs[0])
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
                if a.type == "space" and not (isinstance(a.size, int) or is_param(a.size)):
                    # tiktorch InputTensorValidator: a size is fixed or min + n*step.
                    self.add(c, "ilastik.input-size",
                             f"input axis {a.id!r} has size {a.size!r}; tiktorch accepts a fixed "
                             "size or min + n*step", "write size: {min: m, step: s}")
            if self.outputs:
                out_axes = axes_of(self.outputs[0])
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
