"""Checks of a stack's values before it is used: finite, not constant."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError

def check_finite(data: Any, name: str) -> None:
    """Raise :class:`InputError` if ``data`` holds NaN or infinite values.

    Parameters
    ----------
    data : xarray.DataArray, numpy.ndarray or dask.array.Array
        Any shape. Integer data are always finite and return at once; dask data are
        counted chunk by chunk without loading the whole array.
    name : str
        What to call the data in the message, e.g. ``"input stack 'cells.tif'"``.

    Raises
    ------
    InputError
        Naming how many NaN and infinite values were found and how to remove them.
    """
    arr = data.data if isinstance(data, xr.DataArray) else data
    dtype = np.dtype(getattr(arr, "dtype", np.asarray(arr).dtype))
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating)):
        return
    if hasattr(arr, "compute") and hasattr(arr, "chunks"):  # dask: stream over chunks
        import dask.array as dsa

        n_nan, n_inf = (int(v) for v in dsa.compute(dsa.isnan(arr).sum(), dsa.isinf(arr).sum()))
    else:
        arr = np.asarray(arr)
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
    problems = []
    if n_nan:
        problems.append(f"{n_nan} NaN values")
    if n_inf:
        problems.append(f"{n_inf} infinite values")
    if problems:
        raise InputError(
            f"{name} contains {' and '.join(problems)}; fill or remove them (e.g. Fiji "
            f"Process > Math > Remove NaNs, or numpy.nan_to_num) before passing it to sharpstack")


def check_not_constant(data: Any, name: str) -> None:
    """Raise :class:`InputError` if every value of ``data`` is the same (an all-zero or blank
    stack): a network trained on it learns nothing, and normalising it divides by zero.

    ``data``: a DataArray, numpy or dask array (dask: reduced chunk by chunk). ``name`` is
    what to call it in the message, e.g. ``"training stack 'cells.tif'"``.
    """
    arr = data.data if isinstance(data, xr.DataArray) else data
    if int(np.prod(getattr(arr, "shape", np.shape(arr)))) == 0:
        return
    if hasattr(arr, "compute") and hasattr(arr, "chunks"):
        import dask.array as dsa

        lo, hi = (v.item() for v in dsa.compute(arr.min(), arr.max()))
    else:
        a = np.asarray(arr)
        lo, hi = a.min().item(), a.max().item()
    if lo == hi:
        what = "all zero" if lo == 0 else f"constant (every value is {lo:g})"
        raise InputError(
            f"{name} is {what}: there is no structure to learn from; check the file in Fiji "
            f"(Analyze > Histogram: a failed or empty acquisition, or the wrong channel?) and "
            f"give the stack with the signal")


# --------------------------------------------------------------------------------------------
# voxel size: what the file gave, what the user supplies, what a computation needs
