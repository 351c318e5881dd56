"""A PSF measured from a bead stack (``sharpstack psf beads.tif psf.tif``).

A bead recording comes on the microscope's own grid (z coarser than xy), with background,
beads off-centre and several per field. :func:`measure_psf`:

1. subtracts the background (the median of each z plane);
2. finds beads: local maxima of the lightly smoothed stack
   (:func:`skimage.feature.peak_local_max`) above ``threshold`` (default: the median plus
   8 robust standard deviations, at least 10 % of the brightest unsaturated bead);
3. keeps the isolated ones: whose crop box (default half-sizes twice the brightest bead's
   FWHM) lies inside the stack, with no other maximum (found at half the threshold) within
   1.5 box half-sizes along every axis, and no saturated voxel (the dtype's maximum);
4. crops each, finds its centre to sub-voxel precision (intensity centroid above half its
   maximum) and shifts it onto the crop's centre (:func:`scipy.ndimage.shift`, cubic);
5. averages the crops (each normalised to sum 1), resamples z to the lateral pixel size
   (so the result is on the isotropic grid IsoNet's ``--psf-file`` takes), removes the
   residual background (the median of the crop's border), clips at 0 and normalises to
   sum 1;
6. measures the FWHM along x, y and z (half-maximum crossings of the profiles through the
   centre) and fits a Gaussian to each profile.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["PsfMeasurement", "measure_psf", "psf_file", "fwhm_1d"]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass
class PsfMeasurement:
    """A measured PSF on an isotropic grid (ZYX, sum 1) and what was measured."""

    psf: np.ndarray
    pixel_um: float
    n_beads: int
    centres: list[tuple[float, float, float]]
    rejected: dict[str, int]
    fwhm_um: dict[str, float]
    sigma_um: dict[str, float]
    crop_radius: tuple[int, int]
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        f, s, px = self.fwhm_um, self.sigma_um, self.pixel_um
        rej = ", ".join(f"{n} {why}" for why, n in self.rejected.items() if n) or "none"
        return (f"beads used: {self.n_beads} (rejected: {rej})\n"
                f"FWHM x {f['x']:.3f} um ({f['x'] / px:.2f} px), y {f['y']:.3f} um "
                f"({f['y'] / px:.2f} px), z {f['z']:.3f} um ({f['z'] / px:.2f} px of "
                f"{px:.4g} um)\n"
                f"Gaussian fit: sigma x {s['x']:.3f} um, y {s['y']:.3f} um, z {s['z']:.3f} um "
                f"(sigma_xy = {(s['x'] + s['y']) / 2 / px:.2f} px, sigma_z = "
                f"{s['z'] / px:.2f} px in lateral pixels)")


def fwhm_1d(profile: np.ndarray) -> float:
    """Full width at half maximum (samples) of a single-peaked profile, by linear
    interpolation of the half-maximum crossings either side of the maximum (nan if a side
    never falls below half)."""
    p = np.asarray(profile, dtype=np.float64)
    i = int(np.argmax(p))
    half = p[i] / 2.0
    left = np.nonzero(p[:i] < half)[0]
    right = np.nonzero(p[i:] < half)[0]
    if p[i] <= 0 or not len(left) or not len(right):
        return float("nan")
    a = left[-1]
    xl = a + (half - p[a]) / (p[a + 1] - p[a])
    b = i + right[0]
    xr = b - 1 + (p[b - 1] - half) / (p[b - 1] - p[b])
    return float(xr - xl)


def _gauss_sigma(profile: np.ndarray) -> float:
    from scipy.optimize import curve_fit

    p = np.asarray(profile, dtype=np.float64)
    x = np.arange(len(p), dtype=np.float64)
    i = int(np.argmax(p))
    guess = max(fwhm_1d(p), 1.0) / FWHM_PER_SIGMA if np.isfinite(fwhm_1d(p)) else 2.0

    def g(x, a, mu, s, c):
        return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + c

    try:
        (_, _, s, _), _ = curve_fit(g, x, p, p0=(p[i], i, guess, 0.0), maxfev=5000)
    except (RuntimeError, ValueError):
        return float("nan")
    return float(abs(s))


def _radius_from(stack: np.ndarray, peak: tuple[int, int, int]) -> tuple[int, int]:
    """Crop half-sizes (z slices, lateral px) from the brightest bead: twice its FWHM,
    at least 3 slices / 4 px."""
    z, y, x = peak
    fz = fwhm_1d(stack[:, y, x])
    fy = fwhm_1d(stack[z, :, x])
    fx = fwhm_1d(stack[z, y, :])
    fxy = np.nanmean([fx, fy]) if np.isfinite([fx, fy]).any() else 4.0
    rz = max(3, int(math.ceil(2.0 * (fz if np.isfinite(fz) else 3.0))))
    rxy = max(4, int(math.ceil(2.0 * fxy)))
    return rz, rxy


def measure_psf(stack: np.ndarray, voxel_size: dict[str, float], *,
                threshold: float | None = None, radius: tuple[int, int] | None = None,
                saturation: float | None = None) -> PsfMeasurement:
    """Average the isolated beads of a bead stack into a PSF on an isotropic grid.

    Parameters
    ----------
    stack : ndarray, shape (Z, Y, X)
        The bead recording on the microscope's grid (any real dtype).
    voxel_size : dict
        ``{"z", "y", "x"}`` in micrometres (z may be coarser than y/x).
    threshold : float, optional
        Minimum peak height above the background (stack units), see the module docstring.
    radius : (int, int), optional
        Crop half-sizes (z slices, lateral pixels); default twice the brightest bead's FWHM.
    saturation : float, optional
        A crop holding a voxel at or above this is rejected; default the dtype's maximum for
        integer stacks (none for float stacks).

    Returns
    -------
    PsfMeasurement
        ``psf`` (ZYX, odd sizes, centred, sum 1, voxel = the lateral pixel size) and the
        figures (beads used and rejected, FWHM and Gaussian sigma per axis in micrometres).
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max

    raw = np.asarray(stack)
    if raw.ndim != 3:
        raise InputError(f"a bead stack must be 3D (ZYX), got shape {raw.shape}")
    if saturation is None and np.issubdtype(raw.dtype, np.integer):
        saturation = float(np.iinfo(raw.dtype).max)
    dz = float(voxel_size["z"])
    dxy = (float(voxel_size["y"]) + float(voxel_size["x"])) / 2.0
    a = raw.astype(np.float32)
    a = a - np.median(a, axis=(1, 2), keepdims=True)
    smooth = ndi.gaussian_filter(a, 1.0)
    mad = float(np.median(np.abs(smooth - np.median(smooth)))) * 1.4826
    sat = (ndi.binary_dilation(raw >= saturation, iterations=3) if saturation is not None
           else np.zeros(raw.shape, bool))
    peak_max = float(np.where(sat, -np.inf, smooth).max()) if not sat.all() else 0.0
    if threshold is None:
        threshold = max(np.median(smooth) + 8.0 * mad, 0.1 * peak_max)
    if peak_max <= threshold:
        raise InputError(f"no bead above the threshold {threshold:.4g} (brightest peak "
                         f"{peak_max:.4g} above the background); give a lower --threshold")
    everything = peak_local_max(smooth, min_distance=2, threshold_abs=threshold / 2.0,
                                exclude_border=False)
    peaks = [tuple(int(v) for v in p) for p in everything if smooth[tuple(p)] >= threshold]
    peaks.sort(key=lambda p: -smooth[p])
    rz, rxy = radius or _radius_from(smooth, peaks[0])
    shape = np.array(raw.shape)
    box = np.array([rz, rxy, rxy])
    rejected = {"at the border": 0, "too close to another": 0, "saturated": 0}
    crops, centres = [], []
    for p in peaks:
        pv = np.array(p)
        if np.any(pv - box < 0) or np.any(pv + box >= shape):
            rejected["at the border"] += 1
            continue
        d = np.abs(everything - pv)
        # another bead whose light reaches into the crop (its centre within the box plus
        # half a box, i.e. one FWHM, along every axis)
        neighbours = np.all(d <= 1.5 * box, axis=1) & np.any(d > 0, axis=1)
        if neighbours.any():
            rejected["too close to another"] += 1
            continue
        sl = tuple(slice(c - r, c + r + 1) for c, r in zip(p, box))
        if saturation is not None and float(raw[sl].max()) >= saturation:
            rejected["saturated"] += 1
            continue
        crop = a[sl]
        mask = crop >= 0.5 * crop.max()
        com = np.array(ndi.center_of_mass(np.where(mask, crop, 0.0)))
        shift = box - com
        crops.append(ndi.shift(crop, shift, order=3, mode="nearest"))
        centres.append(tuple(float(c) for c in pv - box + com))
    if not crops:
        raise InputError(f"no isolated bead found ({len(peaks)} candidate(s): "
                         + ", ".join(f"{n} {w}" for w, n in rejected.items() if n)
                         + "); record beads further apart and from the border, or give "
                           "--radius smaller")
    mean = np.mean([c / max(float(c.sum()), 1e-12) for c in crops], axis=0)
    # z to the lateral pixel size, centre kept on the middle voxel
    f = dz / dxy
    cz = int(math.floor(rz * f))
    zc = rz + (np.arange(2 * cz + 1) - cz) / f
    yy, xx = np.arange(2 * rxy + 1), np.arange(2 * rxy + 1)
    coords = np.meshgrid(zc, yy, xx, indexing="ij")
    iso = ndi.map_coordinates(mean, coords, order=1, mode="nearest").astype(np.float64)
    border = np.concatenate([iso[[0, -1]].ravel(), iso[:, [0, -1]].ravel(),
                             iso[:, :, [0, -1]].ravel()])
    iso = np.clip(iso - np.median(border), 0.0, None)
    if iso.sum() <= 0:
        raise InputError("the averaged bead is empty after background removal; check the "
                         "bead stack")
    iso /= iso.sum()
    c = (cz, rxy, rxy)
    profiles = {"z": iso[:, c[1], c[2]], "y": iso[c[0], :, c[2]], "x": iso[c[0], c[1], :]}
    fwhm = {k: fwhm_1d(v) * dxy for k, v in profiles.items()}
    sigma = {k: _gauss_sigma(v) * dxy for k, v in profiles.items()}
    notes = []
    if any(not np.isfinite(v) for v in fwhm.values()):
        notes.append("a profile does not fall to half its maximum inside the crop: give a "
                     "larger --radius")
    return PsfMeasurement(psf=iso.astype(np.float32), pixel_um=dxy, n_beads=len(crops),
                          centres=centres, rejected=rejected, fwhm_um=fwhm, sigma_um=sigma,
                          crop_radius=(rz, rxy), notes=notes)


def psf_file(beads: str | os.PathLike, out: str | os.PathLike, *,
             png: str | os.PathLike | None = None, voxel_size: dict[str, float] | None = None,
             threshold: float | None = None, radius: tuple[int, int] | None = None,
             overwrite: bool = False) -> tuple[PsfMeasurement, dict[str, Path]]:
    """Measure the PSF of the bead stack ``beads`` and write it to ``out`` (with its
    isotropic calibration) and an orthogonal-view PNG (default ``out`` with ``.png``)."""
    from .io import as_dataarray, read_stack, require_voxel_size, with_voxel_size, write_stack
    from .io.atomic import prepare_target

    out = Path(out)
    png = Path(png) if png is not None else out.with_suffix(".png")
    prepare_target(png, overwrite, "PNG")
    data = with_voxel_size(read_stack(beads), voxel_size)
    if tuple(data.dims) != ("z", "y", "x"):
        raise InputError(f"{beads} has axes {''.join(data.dims).upper()}; a bead stack is one "
                         "channel, ZYX")
    vs = require_voxel_size(data, "zyx", purpose="the PSF's size in micrometres and its "
                            "resampling to isotropic voxels")
    m = measure_psf(np.asarray(data.values), vs, threshold=threshold, radius=radius)
    px = m.pixel_um
    written = write_stack(out, as_dataarray(m.psf, "ZYX", {"z": px, "y": px, "x": px}),
                          overwrite=overwrite)
    _orthoviews(m, png)
    return m, {"psf": written, "png": png}


def _orthoviews(m: PsfMeasurement, path: Path) -> None:
    """xy, xz, yz sections through the centre (linear and log scale), axes in micrometres."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import write_file_atomic

    p = m.psf
    cz, cy, cx = (s // 2 for s in p.shape)
    ext = lambda a, b: (-a * m.pixel_um / 2, a * m.pixel_um / 2,  # noqa: E731
                        b * m.pixel_um / 2, -b * m.pixel_um / 2)
    views = [("xy", p[cz], ext(p.shape[2], p.shape[1])),
             ("xz", p[:, cy, :], ext(p.shape[2], p.shape[0])),
             ("yz", p[:, :, cx], ext(p.shape[1], p.shape[0]))]
    fig, axs = plt.subplots(2, 3, figsize=(9, 6), dpi=100)
    for j, (name, img, e) in enumerate(views):
        for i, (scale, data) in enumerate((("linear", img),
                                           ("log10", np.log10(img + img.max() * 1e-3)))):
            ax = axs[i, j]
            ax.imshow(data, cmap="magma", extent=e, interpolation="nearest")
            ax.set_title(f"{name} ({scale})", fontsize=9)
            ax.set_xlabel(f"{name[0]} (um)", fontsize=8)
            ax.set_ylabel(f"{name[1]} (um)", fontsize=8)
            ax.tick_params(labelsize=7)
    f = m.fwhm_um
    fig.suptitle(f"PSF from {m.n_beads} bead(s): FWHM x {f['x']:.3f}, y {f['y']:.3f}, "
                 f"z {f['z']:.3f} um", fontsize=10)
    fig.tight_layout()

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png")

    try:
        write_file_atomic(path, write)
    finally:
        plt.close(fig)
