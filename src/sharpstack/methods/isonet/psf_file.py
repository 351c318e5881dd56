"""A PSF file on any grid, brought onto the grid IsoNet needs: isotropic voxels of the
training stack's lateral pixel size (``--psf file --psf-file PSF``).

A bead recording or a PSF from another tool comes with its own calibration (z often coarser
than xy, a pixel size other than the stack's). :func:`load_psf_file` reads the calibration
and resamples every axis to the lateral pixel size by linear interpolation about the array's
centre, removes a residual background (median of the border), clips at 0 and normalises to
sum 1. A PSF without calibration is taken to be on the isotropic grid of the stack's pixel
already (the form ``sharpstack psf`` writes), and that is said.
"""

from __future__ import annotations

import numpy as np

from ...errors import InputError

__all__ = ["load_psf_file", "resample_psf"]


def resample_psf(psf: np.ndarray, voxel_size: dict[str, float], pixel_um: float) -> np.ndarray:
    """Resample a ZYX PSF of ``voxel_size`` (um per axis) onto an isotropic grid of
    ``pixel_um``, centred on the array centre, odd sizes, covering the same extent."""
    from scipy import ndimage as ndi

    a = np.asarray(psf, dtype=np.float64)
    coords = []
    for n, ax in zip(a.shape, "zyx"):
        step = float(voxel_size[ax]) / float(pixel_um)  # input voxels per output voxel, inv.
        half = int(np.floor((n - 1) / 2.0 * step + 1e-9))
        coords.append((n - 1) / 2.0 + np.arange(-half, half + 1) / step)
    grid = np.meshgrid(*coords, indexing="ij")
    return ndi.map_coordinates(a, grid, order=1, mode="constant", cval=0.0)


def load_psf_file(path: str, pixel_um: float | None) -> tuple[np.ndarray, list[str]]:
    """The PSF at ``path`` on the isotropic grid of ``pixel_um`` (the training stack's lateral
    pixel size, um; None when unknown), normalised; plus notes for the training log."""
    from ...io import read_stack

    data = read_stack(path)
    arr = np.asarray(data.values, dtype=np.float64)
    if arr.ndim != 3 or not np.isfinite(arr).all() or arr.sum() <= 0:
        raise InputError(f"PSF file {path} must be a finite, non-empty 3D (ZYX) stack; check "
                         "--psf-file")
    vs = dict(data.attrs.get("voxel_size") or {})
    notes: list[str] = []
    calibrated = bool(data.attrs.get("calibrated")) and all(k in vs for k in "zyx")
    if not calibrated:
        notes.append(f"the PSF file {path} has no voxel size: it is taken to be sampled on "
                     "isotropic voxels of the stack's lateral pixel size (what `sharpstack "
                     "psf` writes); if not, save it with its calibration")
    else:
        iso = max(vs.values()) <= 1.001 * min(vs.values())
        target = pixel_um
        if target is None:
            if not iso:
                raise InputError(f"the PSF file {path} is on an anisotropic grid "
                                 f"({vs['z']:g}, {vs['y']:g}, {vs['x']:g} um) and the "
                                 "stack's pixel size is unknown, so it cannot be resampled: "
                                 "pass --pixel UM (or --voxel-size Z,Y,X)")
            notes.append(f"the stack's pixel size is unknown: the PSF's own isotropic grid "
                         f"({vs['x']:g} um) is taken to be the stack's")
        elif not (iso and abs(vs["x"] - target) <= 1e-3 * target):
            before = arr.shape
            arr = resample_psf(arr, vs, target)
            notes.append(f"the PSF from {path} ({vs['z']:g} x {vs['y']:g} x {vs['x']:g} um, "
                         f"shape {before}) was resampled to isotropic {target:g} um voxels "
                         f"(shape {arr.shape})")
    n = arr.ndim
    border = np.concatenate([np.take(arr, [0, -1], axis=ax).ravel() for ax in range(n)])
    arr = np.clip(arr - max(float(np.median(border)), 0.0), 0.0, None)
    if arr.sum() <= 0:
        raise InputError(f"the PSF in {path} is empty after removing its background (the "
                         "median of its border); crop it closer to the bead")
    return (arr / arr.sum()).astype(np.float32), notes
