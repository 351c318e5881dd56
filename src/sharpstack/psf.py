"""Point spread functions shared by several methods: the Gaussian PSF and defocus widths.

Every 3D PSF is a ``float32`` numpy array with axes ``"ZYX"`` on an *isotropic* grid (the
voxel size is the lateral pixel size in every direction), odd sizes along every axis, the
centre voxel at ``shape // 2``, non-negative and normalised to sum 1.

- :func:`gaussian_psf`: the anisotropic Gaussian PSF (IsoNet's synthetic data; the Gaussian
  baseline of the disentangled deblurring benchmark);
- :func:`fit_defocus_sigmas`: the Gaussian widths that best explain a real defocus stack
  (the Richardson-Lucy baselines of the disentangled deblurring and ZSE-GAN benchmarks).

The checks and small helpers (:func:`check_shape`, :func:`check_positive`,
:func:`check_optics`, :func:`normalise`, :func:`gauss1d`, :func:`half_size`) serve the PSFs
that are one method's own as well (``methods/isonet/optics.py``: confocal and light-sheet
PSFs, lateral kernels; ``methods/disentangled/defocus.py``: widefield defocus PSFs); they
are not part of ``__all__``.

Examples
--------
>>> h = gaussian_psf(2.0, 8.0)
>>> h.shape
(65, 17, 17)
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError

__all__ = [
    "gaussian_psf",
    "fit_defocus_sigmas",
]


# ----------------------------------------------------------------------------- helpers
def check_shape(shape, name: str = "shape") -> tuple[int, int, int]:
    try:
        shp = tuple(int(s) for s in shape)
    except TypeError:
        raise InputError(
            f"{name} must be a tuple of three odd ints (Z, Y, X), got {shape!r}") from None
    if len(shp) != 3 or any(s < 1 or s % 2 == 0 for s in shp):
        raise InputError(
            f"{name}={shape!r} must be three positive odd sizes (Z, Y, X) so that the PSF has a "
            f"centre voxel; e.g. (33, 17, 17)")
    return shp  # type: ignore[return-value]


def check_positive(value: float, name: str, allow_zero: bool = False) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        cond = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name} must be a finite number {cond}, got {value!r}")
    return v


def normalise(arr: np.ndarray) -> np.ndarray:
    arr = np.clip(np.asarray(arr, dtype=np.float64), 0.0, None)
    return (arr / arr.sum()).astype(np.float32)


def gauss1d(sigma: float, half: int) -> np.ndarray:
    x = np.arange(-half, half + 1, dtype=np.float64)
    if sigma == 0:
        return (x == 0).astype(np.float64)
    return np.exp(-0.5 * (x / sigma) ** 2)


def half_size(extent: float) -> int:
    return max(1, int(math.ceil(extent)))


def check_optics(na: float, n_immersion: float, name: str = "na") -> None:
    if not na < n_immersion:
        raise InputError(
            f"{name}={na} must be smaller than the immersion refractive index n_immersion="
            f"{n_immersion} (NA = n sin(theta)); lower the NA or raise n_immersion")


# ----------------------------------------------------------------------------- PSF models
def gaussian_psf(sigma_xy: float, sigma_z: float,
                 shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Anisotropic 3D Gaussian PSF (the paper's "gaussian", sigma_xy/sigma_z = 2/8).

    Parameters
    ----------
    sigma_xy : float
        Lateral standard deviation in voxels (>= 0; 0 gives a delta along y and x).
    sigma_z : float
        Axial standard deviation in voxels (>= 0).
    shape : tuple of 3 odd ints, optional
        ``(Z, Y, X)`` size. Default: ``2 * ceil(4 sigma) + 1`` per axis (at least 3).

    Returns
    -------
    np.ndarray
        ``float32`` array of shape ``(Z, Y, X)``, axes ``"ZYX"``, sum 1, centred at
        ``shape // 2``. Values are the Gaussian sampled at voxel centres.

    Examples
    --------
    >>> gaussian_psf(2, 8).shape
    (65, 17, 17)
    """
    sxy = check_positive(sigma_xy, "sigma_xy", allow_zero=True)
    sz = check_positive(sigma_z, "sigma_z", allow_zero=True)
    if shape is None:
        shape = (2 * half_size(4 * sz) + 1, 2 * half_size(4 * sxy) + 1, 2 * half_size(4 * sxy) + 1)
    nz, ny, nx = check_shape(shape)
    gz, gy, gx = gauss1d(sz, nz // 2), gauss1d(sxy, ny // 2), gauss1d(sxy, nx // 2)
    return normalise(gz[:, None, None] * gy[None, :, None] * gx[None, None, :])


# ----------------------------------------------------- defocus widths measured from stacks
def fit_defocus_sigmas(stacks: list[np.ndarray], focal: int,
                       grid: np.ndarray | None = None) -> np.ndarray:
    """Per plane, the Gaussian width (pixels) that best turns the focal plane into that plane.

    For every stack and plane k, the width on ``grid`` minimising the squared error between
    plane k and the best affine intensity map of the focal plane blurred with that width;
    the median over stacks. Widths of 0 for the focal plane. Stacks in [0, 1], ZYX.
    """
    import scipy.ndimage as ndi

    grid = np.round(np.arange(0.0, 8.01, 0.25), 2) if grid is None else np.asarray(grid)
    per = []
    for st in stacks:
        f = st[focal].astype(np.float64)
        blurred = [ndi.gaussian_filter(f, s, mode="reflect") if s > 0 else f for s in grid]
        row = []
        for k in range(st.shape[0]):
            t = st[k].astype(np.float64).ravel()
            errs = []
            for b in blurred:
                a = np.vstack([b.ravel(), np.ones(t.size)]).T
                res = np.linalg.lstsq(a, t, rcond=None)[1]
                errs.append(float(res[0]) if res.size else 0.0)
            row.append(float(grid[int(np.argmin(errs))]))
        per.append(row)
    s = np.median(np.array(per), axis=0)
    s[focal] = 0.0
    return s
