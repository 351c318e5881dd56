"""Weights conversion: TorchScript, ONNX and state dict from one deploy module.

TorchScript is written by tracing (no control flow depends on data in the deploy modules), and
ONNX with the TorchScript-based exporter at opset 17 and IR version 8 with dynamic batch and
space axes: the highest versions that deepImageJ's onnxruntime 1.12/1.13 reads.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch

__all__ = ["export_torchscript", "export_onnx", "export_state_dict", "sha256_of",
           "ONNX_OPSET", "ONNX_IR_VERSION"]

ONNX_OPSET = 17
ONNX_IR_VERSION = 8


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_torchscript(module: torch.nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Trace ``module`` on ``example`` and save it; checks the traced module on the example."""
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example, check_trace=False)
        ref = module(example)
        got = traced(example)
    if not torch.allclose(ref, got, atol=1e-5, rtol=1e-5):
        raise RuntimeError("TorchScript trace does not reproduce the module on the example input")
    path = Path(path)
    traced.save(str(path))
    return path


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: str | Path, *,
                space_axes: int, opset: int = ONNX_OPSET) -> Path:
    """Export to ONNX (opset ``opset``, IR version 8) with dynamic batch and space axes.

    Parameters
    ----------
    space_axes : int
        2 for ``(B, C, Y, X)`` models, 3 for ``(B, C, Z, Y, X)``.
    """
    import onnx

    module = module.eval()
    names = ["z", "y", "x"][-space_axes:]
    dyn_in = {0: "batch", **{2 + i: f"in_{n}" for i, n in enumerate(names)}}
    dyn_out = {0: "batch", **{2 + i: f"out_{n}" for i, n in enumerate(names)}}
    path = Path(path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), opset_version=opset, dynamo=False,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": dyn_in, "output": dyn_out},
                          do_constant_folding=True)
    model = onnx.load(str(path))
    if model.ir_version > ONNX_IR_VERSION:
        model.ir_version = ONNX_IR_VERSION
        onnx.save(model, str(path))
    onnx.checker.check_model(model)
    return path


def export_state_dict(module: torch.nn.Module, path: str | Path) -> Path:
    """Save the state dict (CPU tensors) for a ``pytorch_state_dict`` weights entry."""
    path = Path(path)
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, str(path))
    return path
