"""The windows check every deployable of every method goes through (issue: a float32 stack
predicted in several windows came out wrong while one window was right).

For a package: its sample input predicted with the default windows reproduces its sample
output; a stack built from the sample input (mirrored copies, so structures continue across
the seams) that is larger than one default window along every tiled axis, with lengths that
are not multiples of the model's step, gives the same output with the default windows as
with one window; and the input array is left as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from sharpstack.io import read_stack
from sharpstack.predict import load_model, predict_array
from sharpstack.predict.model import digest as _digest
from sharpstack.predict.tiling import DEFAULT_TILE

ONE_WINDOW = 1 << 30


def _sample(package: Path, which: str) -> xr.DataArray:
    """The package's sample input or output TIFF, read from its folder or zip."""
    import tempfile
    import zipfile

    descr = load_model(package)
    tensor = descr.inputs[0] if which == "input" else descr.outputs[0]
    member = Path(str(tensor.sample_tensor.source)).name
    package = Path(package)
    if package.suffix == ".zip":
        path = Path(tempfile.mkdtemp()) / member
        with zipfile.ZipFile(package) as z:
            path.write_bytes(z.read(member))
        return read_stack(path)
    return read_stack(package / member)


def _larger_than_a_window(x: xr.DataArray, package: Path, tile: dict[str, int]
                          ) -> xr.DataArray:
    """Mirrored copies of ``x`` along every tiled axis until it is longer than one window
    there, cut to a length that is not a multiple of the step (blocks kept whole)."""
    model = _digest(load_model(package))
    arr, dims = np.asarray(x.values, dtype=np.float32), list(x.dims)
    for d in ("z", "y", "x"):
        if d not in dims:
            continue
        g = model.space.get(d)
        k = dims.index(d)
        want = tile[d] + (g.step if g is not None and g.step else 0) + 5
        parts, n = [arr], arr.shape[k]
        while n < want:
            parts.append(np.flip(parts[-1], axis=k))
            n += arr.shape[k]
        arr = np.concatenate(parts, axis=k)
        if g is not None and g.blocks:
            continue  # independent blocks (ZSE-GAN's z-scans): whole blocks only
        cut = want
        if g is not None and g.step and (cut - g.min) % g.step == 0:
            cut += 1
        arr = np.ascontiguousarray(np.take(arr, range(cut), axis=k))
    return xr.DataArray(arr, dims=dims)


def assert_windows_agree(package: Path, tile: dict[str, int] | None = None
                         ) -> dict[str, tuple[int, ...]]:
    """The check described in the module docstring; returns the shapes used. ``tile``
    replaces the default window along the axes it names (the upsampling IsoNet package
    would otherwise need a stack of 64 planes x 8)."""
    req = {**DEFAULT_TILE, **(tile or {})}
    x = _sample(package, "input")
    expected = _sample(package, "output").values
    got = predict_array(package, x).values
    assert got.shape == expected.shape, (got.shape, expected.shape)
    scale = float(np.abs(expected).max()) or 1.0
    assert np.abs(got - expected).max() <= 1e-4 * scale + 1e-5, np.abs(got - expected).max()

    big = _larger_than_a_window(x, package, req)
    before = big.values.copy()
    # the windows of the old fixed default (memory-sized default windows would cover this
    # stack in one): several windows along every tiled axis
    tiled = predict_array(package, big, tile={k: v for k, v in req.items() if k in big.dims}
                          ).values
    assert (big.values == before).all(), "prediction changed its input"
    one = predict_array(package, big, tile=ONE_WINDOW, check=False).values
    scale = float(np.abs(one).max()) or 1.0
    diff = float(np.abs(tiled - one).max())
    assert np.isfinite(tiled).all() and diff <= 1e-4 * scale, (diff, scale, big.shape)
    return {"sample": tuple(x.shape), "large": tuple(big.shape)}
