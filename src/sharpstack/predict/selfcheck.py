"""The self-check before every prediction (on by default; ``--no-check`` skips it).

:func:`self_test` runs the package's test input through the same runner, weights and windows
as the prediction that follows and compares it with the package's test output; on a mismatch
it names the fault (sharpstack's windows, sharpstack's runner, or the package's weights).
Along the axes the user's stack is cut into several windows, the test input mirrored into a
longer stack must give the same output in several windows as in one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError, PackageError
from .job import compute_in_memory, prepare
from .model import digest
from .tiling import plan as plan_windows

__all__ = ["self_test"]


_WHOLE = 1 << 30  # a tile request that puts every axis into one window


def _mismatch(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Where |d| > 1e-3 + 1e-3 |expected| or the value is not finite (NaN compares False)."""
    return ~(np.abs(got.astype(np.float64) - expected) <= 1e-3 + 1e-3 * np.abs(expected))


def _close(got: np.ndarray, expected: np.ndarray) -> bool:
    """Same shape, within the tolerance of :func:`_mismatch` everywhere."""
    return got.shape == expected.shape and not _mismatch(got, expected).any()


def _test_tensors(descr: Any) -> tuple[xr.DataArray, np.ndarray] | None:
    """The package's test input (dims from ``c z y x``) and test output, read safely; None
    when it has none."""
    from bioimageio.spec.utils import load_array

    ipt, opt = descr.inputs[0], descr.outputs[0]
    name = f"package {descr.name!r}"
    if ipt.test_tensor is None or opt.test_tensor is None:
        return None

    def as_named(arr: np.ndarray, axes: Any) -> xr.DataArray:
        dims = ["c" if str(a.id) == "channel" else str(a.id) for a in axes]
        if "batch" in dims:
            arr, dims = arr[(slice(None),) * dims.index("batch") + (0,)], \
                [d for d in dims if d != "batch"]
        if "c" in dims and arr.shape[dims.index("c")] == 1:
            arr, dims = arr.squeeze(dims.index("c")), [d for d in dims if d != "c"]
        return xr.DataArray(arr, dims=dims)

    try:  # load_array refuses pickled (object) arrays and checks the declared sha256
        x, y = (np.asarray(load_array(t.test_tensor)) for t in (ipt, opt))
        if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
            raise ValueError(f"test tensors of dtype {x.dtype} / {y.dtype}, not numbers")
        return as_named(x, ipt.axes), as_named(y, opt.axes).values
    except PackageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read them is the package's fault
        reason = " ".join(str(exc).split())[:300]
        raise PackageError(f"{name}: its test tensors cannot be read ({type(exc).__name__}: "
                           f"{reason}); the package is damaged or was altered. Nothing was "
                           f"predicted; get the package again, or predict with --no-check "
                           f"if you trust it") from None


def _mirror(x: xr.DataArray, axes: Sequence[str], times: int) -> xr.DataArray:
    """``x`` repeated ``times`` times along ``axes``, every other copy flipped (no seams)."""
    arr = np.asarray(x.values, dtype=x.dtype)
    for a in axes:
        k = x.dims.index(a)
        parts = [arr if i % 2 == 0 else np.flip(arr, axis=k) for i in range(times)]
        arr = np.ascontiguousarray(np.concatenate(parts, axis=k))
    return xr.DataArray(arr, dims=x.dims)


def _core_reproduces(descr: Any, weight_format: str, expected: np.ndarray) -> bool | None:
    """Does bioimageio.core's own pipeline reproduce the test output with these weights?
    None when it cannot run them."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import get_test_input_sample

    try:
        sample = get_test_input_sample(descr)
        with create_prediction_pipeline(bioimageio_model=descr, weight_format=weight_format) as pp:
            res = pp.predict_sample_without_blocking(sample)
        (t,) = res.members.values()
        got = np.asarray(t.data, dtype=np.float64).reshape(expected.shape)
    except Exception:  # noqa: BLE001 - only a diagnosis: unknown when core cannot run it
        return None
    return _close(got, expected)


def self_test(descr: Any, weight_format: str, trust_code: bool,
              log: Callable[[str], Any] | None, *, split: Sequence[str] = (),
              tile: Any = None, device: str | None = None, threads: int | None = None,
              batch: int | None = None) -> None:
    """The self-check before a prediction (on by default; ``--no-check`` skips it).

    1. The package's test input through this runner, windows and weight format, compared
       with its test output (|d| <= 1e-3 + 1e-3 |expected|, finite). On a mismatch the same
       input in one window, then bioimageio.core's own pipeline, say whether sharpstack's
       windows, sharpstack's runner or the package's weights are at fault.
    2. Along the axes ``split`` (those cut into several windows for the user's stack), the
       test input mirrored into a longer stack is run in several windows and in one; they
       must agree, or the windows (or the package's halo) are at fault.

    Done here rather than with ``bioimageio.core.test_model``, whose comparison lets NaN
    through and which does not run the code path (tiling, batching, weight choice) used next.
    """
    tensors = _test_tensors(descr)
    name = f"package {descr.name!r}"
    if tensors is None:  # format 0.4 allowed it; nothing to compare with
        warnings.warn(f"{name} has no test tensors, so the self-check cannot run: its output "
                      f"is unchecked", stacklevel=2)
        return
    x, expected = tensors
    fix = "nothing was predicted"

    def run(inp: xr.DataArray, req: Any) -> np.ndarray:
        # a fresh copy for every run, so that nothing one run does to its input (a runner
        # that normalised windows in place did) can hide in the next one's
        inp = inp.copy(deep=True)
        # what predict_array does without its self-check; no code_reason: the weight format
        # was chosen under the caller's trust decision
        job = prepare(descr, inp, tile=req, weight_format=weight_format, device=device,
                      threads=threads, batch=batch, planes=True)
        return compute_in_memory(job, inp).values

    def attempt(inp: xr.DataArray, req: Any) -> tuple[np.ndarray | None, str]:
        try:
            return run(inp, req), ""
        except (PackageError, InputError) as exc:
            return None, str(exc)

    got, err = attempt(x, tile)
    if got is None or not _close(got, expected):
        whole, _ = attempt(x, _WHOLE)
        if whole is not None and _close(whole, expected):
            raise PackageError(
                f"{name}: its test input predicted in windows differs from its test output, "
                f"while one window reproduces it: sharpstack's windows are at fault (please "
                f"report this), not the weights; {fix}. Workaround: --tile larger than the "
                f"stack along every axis")
        core = _core_reproduces(descr, weight_format, expected)
        if core:
            raise PackageError(
                f"{name}: bioimageio.core reproduces its test output with the {weight_format} "
                f"weights but sharpstack's runner does not{': ' + err if err else ''}: a "
                f"sharpstack fault (please report this), not the weights; {fix}. Try another "
                f"--weight-format")
        what = err or (f"{int((~np.isfinite(got)).sum())} non-finite values, "
                       f"{int(_mismatch(got, expected).sum())}"
                       f" of {got.size} differ" if got is not None and got.shape == expected.shape
                       else f"output shape {None if got is None else got.shape}, expected "
                            f"{expected.shape}")
        raise PackageError(
            f"{name}: its {weight_format} weights do not reproduce the package's own test "
            f"output ({what}; bioimageio.core "
            f"{'cannot run them either' if core is None else 'fails the same way'}): the "
            f"weights are damaged or were altered; {fix}. Get the package again, try another "
            f"--weight-format, or check it with `sharpstack validate PACKAGE`")
    if log is not None:
        log(f"self-check: the package's test output is reproduced ({weight_format} weights)")
    axes = [a for a in split if a in x.dims]
    if not axes:
        return
    model = digest(descr)
    loop_z = "z" in x.dims and "z" not in model.space

    def cut(sizes: dict[str, int], req: Any) -> set[str]:
        plan = plan_windows(model.space, sizes, req, loop_z)
        return {a for a in axes if len(plan.axes.get(a, ())) > 1}

    sizes = {str(d): int(n) for d, n in x.sizes.items()}
    left = [a for a in axes if a not in cut(sizes, tile)]  # the first run cut the others
    if left:
        for times in (1, 2, 3, 4):  # the test input itself, else mirrored copies of it
            big = x if times == 1 else _mirror(x, left, times)
            sizes = {str(d): int(n) for d, n in big.sizes.items()}
            req = {a: model.space[a].largest_valid(sizes[a] - 1) for a in left}
            if cut(sizes, req) >= set(left):
                break
        else:  # the test input is too small to cut into windows: nothing more to compare
            return
        ref = expected if times == 1 else run(big, _WHOLE)
        tiled = run(big, req)
        if not _close(tiled, ref):
            diff = float(np.nanmax(np.abs(tiled.astype(np.float64) - ref)))
            raise PackageError(
                f"{name}: its test input{'' if times == 1 else ', mirrored to ' + 'x'.join(map(str, big.shape)) + ','} "
                f"predicted in windows along {', '.join(left)}, differs from one window by up "
                f"to {diff:.3g}: the windows are at fault (the package's halo may be smaller "
                f"than its network's reach, or sharpstack's tiling is wrong), not the weights; "
                f"{fix}. Workaround: --tile larger than the stack along {', '.join(left)}")
    if log is not None:
        log(f"self-check: windows along {', '.join(axes)} agree with one window")
