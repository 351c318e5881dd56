"""IsoNet's optics: the confocal and light-sheet PSFs, and the 2D lateral kernels.

The PSFs follow :mod:`sharpstack.psf`'s conventions: ``float32`` numpy arrays with axes
``"ZYX"`` on an *isotropic* grid (the voxel size is the lateral pixel size in every
direction), odd sizes along every axis, the centre voxel at ``shape // 2``, non-negative and
normalised to sum 1.

The IsoNet image formation model is ``g = P[S_sigma(h * f)] + eta`` (Weigert et al. 2017).
To make training pairs from lateral slices, the PSF ``h`` is turned on its side
(:func:`rotate_to_lateral`) and reduced to a 2D kernel (:func:`lateral_kernel`), either
``"full"`` (the whole rotated PSF) or ``"split"`` (only its anisotropic part ``h_split`` with
``h_rot = h_iso * h_split``, where ``h_iso`` is the isotropic PSF of
:func:`isotropic_psf`). The Gaussian PSF, shared with other methods, is
:func:`sharpstack.psf.gaussian_psf`.

Examples
--------
>>> from sharpstack.psf import gaussian_psf
>>> h = gaussian_psf(2.0, 8.0)
>>> k = lateral_kernel(h, "split")          # 2D kernel for a YX slice, blur along y
>>> round(float(k.sum()), 6)
1.0
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from ...errors import InputError
from ...psf import check_optics, check_positive, check_shape, gauss1d, half_size, normalise

__all__ = [
    "confocal_psf",
    "lightsheet_psf",
    "isotropic_psf",
    "rotate_to_lateral",
    "lateral_kernel",
]

#: Gaussian approximations of a widefield PSF (Zhang, Zerubia & Olivo-Marin 2007, paraxial):
#: lateral sigma = _LAT * lambda / NA, axial sigma = _AX * lambda * n / NA^2. Used only to pick
#: default array sizes, never for the PSF values themselves.
_LAT = 0.21
_AX = 0.66


# ----------------------------------------------------------------------------- helpers
def _check_psf(psf, ndim: int = 3, name: str = "psf") -> np.ndarray:
    arr = np.asarray(psf, dtype=np.float32)
    if arr.ndim != ndim:
        axes = "ZYX" if ndim == 3 else "YX"
        raise InputError(
            f"{name} must be a {ndim}D array with axes {axes!r}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(
            f"{name} contains NaN or infinite values; compute it again or clean it")
    if arr.sum() <= 0:
        raise InputError(f"{name} sums to {float(arr.sum())}; a PSF must have positive total weight")
    return arr


def _widefield_sigmas(na: float, wavelength: float, n: float) -> tuple[float, float]:
    return _LAT * wavelength / na, _AX * wavelength * n / na ** 2


def _psfmodels_widefield(shape, voxel_size_um, na, wavelength_um, n_immersion) -> np.ndarray:
    """Widefield PSF from psfmodels' vectorial model, index-matched, point at the coverslip."""
    import psfmodels

    nz, ny, nx = shape
    if ny != nx:
        raise InputError(f"psfmodels computes square lateral sizes; got shape {shape}, use Y == X")
    p = psfmodels.make_psf(
        nz, nx, dxy=voxel_size_um, dz=voxel_size_um, pz=0.0, NA=na, wvl=wavelength_um,
        ns=n_immersion, ni=n_immersion, ni0=n_immersion, model="vectorial")
    return np.asarray(p, dtype=np.float64)


# ----------------------------------------------------------------------------- PSF models
def confocal_psf(na: float = 1.1, wavelength_ex_um: float = 0.488, wavelength_em_um: float = 0.52,
                 n_immersion: float = 1.33, voxel_size_um: float = 0.1,
                 shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Confocal PSF: widefield excitation PSF times widefield emission PSF.

    Both factors come from the vectorial model of ``psfmodels`` (Aguet et al. 2009) for an
    index-matched sample (sample, immersion and design refractive indices all equal to
    ``n_immersion``) with the point source at the coverslip, so there is no spherical
    aberration and the PSF is symmetric in z.

    Approximation: a pinhole of about 1 Airy unit is treated as a point pinhole, i.e. the
    confocal PSF is the plain product ``h_ex * h_em``. A real 1 AU pinhole makes the PSF a
    little wider (the emission PSF convolved laterally with the pinhole disc); use
    ``psfmodels.confocal_psf`` directly if that matters.

    Parameters
    ----------
    na : float
        Numerical aperture of the objective (must be < ``n_immersion``). Paper: 1.1.
    wavelength_ex_um, wavelength_em_um : float
        Excitation and emission vacuum wavelengths in micrometres.
    n_immersion : float
        Refractive index of immersion medium and sample (1.33 = water).
    voxel_size_um : float
        Isotropic voxel size in micrometres (the lateral pixel size of the data).
    shape : tuple of 3 odd ints, optional
        ``(Z, Y, X)`` with ``Y == X``. Default: about 4 axial and 6 lateral widefield standard
        deviations per side (Gaussian approximation of Zhang et al. 2007).

    Returns
    -------
    np.ndarray
        ``float32`` array of shape ``(Z, Y, X)``, axes ``"ZYX"``, sum 1.
    """
    na = check_positive(na, "na")
    n = check_positive(n_immersion, "n_immersion")
    lex = check_positive(wavelength_ex_um, "wavelength_ex_um")
    lem = check_positive(wavelength_em_um, "wavelength_em_um")
    vox = check_positive(voxel_size_um, "voxel_size_um")
    check_optics(na, n)
    if shape is None:
        s_lat, s_ax = _widefield_sigmas(na, max(lex, lem), n)
        hz, hxy = half_size(4 * s_ax / vox), half_size(6 * s_lat / vox)
        shape = (2 * max(hz, 3) + 1, 2 * max(hxy, 3) + 1, 2 * max(hxy, 3) + 1)
    shape = check_shape(shape)
    ex = _psfmodels_widefield(shape, vox, na, lex, n)
    em = _psfmodels_widefield(shape, vox, na, lem, n)
    return normalise(ex * em)


def lightsheet_psf(na_detect: float = 0.8, na_illum: float = 0.1, wavelength_um: float = 0.52,
                   n_immersion: float = 1.33, voxel_size_um: float = 0.1,
                   shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Light-sheet PSF: widefield detection PSF times the illumination sheet profile in z.

    The detection PSF is psfmodels' vectorial widefield PSF (index-matched, as in
    :func:`confocal_psf`). The sheet is a Gaussian beam focused by ``na_illum`` and
    propagating along x; its intensity across the sheet is
    ``I(z) = exp(-2 z^2 / w0^2)`` with beam waist ``w0 = lambda / (pi n tan(theta))`` and
    ``sin(theta) = na_illum / n`` (``lambda`` the vacuum wavelength, so ``lambda / n`` is the
    wavelength in the medium). Approximations: the same wavelength is used for illumination
    and detection, and the beam is taken at its waist over the whole PSF window (its Rayleigh
    range ``pi w0^2 n / lambda``, about 22 um for the defaults, is far larger than the PSF).

    Parameters
    ----------
    na_detect : float
        Detection objective NA (< ``n_immersion``). Paper: 0.8.
    na_illum : float
        Illumination NA (< ``n_immersion``). Paper: 0.1.
    wavelength_um : float
        Vacuum wavelength in micrometres (used for detection and illumination).
    n_immersion : float
        Refractive index of immersion medium and sample.
    voxel_size_um : float
        Isotropic voxel size in micrometres.
    shape : tuple of 3 odd ints, optional
        ``(Z, Y, X)`` with ``Y == X``. Default: 4 standard deviations of the narrower of the
        axial detection PSF and the sheet per side in z, 6 lateral ones in y and x.

    Returns
    -------
    np.ndarray
        ``float32`` array of shape ``(Z, Y, X)``, axes ``"ZYX"``, sum 1.
    """
    nad = check_positive(na_detect, "na_detect")
    nai = check_positive(na_illum, "na_illum")
    n = check_positive(n_immersion, "n_immersion")
    lam = check_positive(wavelength_um, "wavelength_um")
    vox = check_positive(voxel_size_um, "voxel_size_um")
    check_optics(nad, n, "na_detect")
    check_optics(nai, n, "na_illum")
    theta = math.asin(nai / n)
    w0 = lam / (math.pi * n * math.tan(theta))
    if shape is None:
        s_lat, s_ax = _widefield_sigmas(nad, lam, n)
        hz, hxy = half_size(4 * min(s_ax, w0 / 2) / vox), half_size(6 * s_lat / vox)
        shape = (2 * max(hz, 3) + 1, 2 * max(hxy, 3) + 1, 2 * max(hxy, 3) + 1)
    shape = check_shape(shape)
    det = _psfmodels_widefield(shape, vox, nad, lam, n)
    z = (np.arange(shape[0]) - shape[0] // 2) * vox
    sheet = np.exp(-2.0 * z ** 2 / w0 ** 2)
    return normalise(det * sheet[:, None, None])


# ----------------------------------------------------------------------------- derived PSFs
def isotropic_psf(psf: np.ndarray) -> np.ndarray:
    """Isotropic PSF ``h_iso`` with the lateral resolution of ``psf`` in every direction.

    Built from the in-focus lateral slice (the z plane holding the PSF maximum): its
    rotational average ``p(r)`` (pixels grouped by exact squared radius, so values at those
    radii are exact) is spun into 3D, ``h_iso(z, y, x) = p(sqrt(z^2 + y^2 + x^2))``,
    interpolated log-linearly in ``r^2`` (exact for Gaussians) and zero beyond the largest
    radius the slice covers. For a Gaussian
    PSF with (sigma_xy, sigma_z) this gives the Gaussian with sigma_xy along all three axes.

    Parameters
    ----------
    psf : np.ndarray
        ``(Z, Y, X)`` PSF, axes ``"ZYX"``, odd sizes, centred.

    Returns
    -------
    np.ndarray
        ``float32`` cube ``(N, N, N)`` with ``N = min(Y, X)``, axes ``"ZYX"``, sum 1.
    """
    h = _check_psf(psf)
    check_shape(h.shape, "psf.shape")
    z0 = int(np.argmax(h.reshape(h.shape[0], -1).max(axis=1)))
    sl = h[z0].astype(np.float64)
    ny, nx = sl.shape
    yy, xx = np.ogrid[-(ny // 2):ny // 2 + 1, -(nx // 2):nx // 2 + 1]
    r2 = (yy ** 2 + xx ** 2).ravel()
    uniq, inv = np.unique(r2, return_inverse=True)
    prof = np.bincount(inv, weights=sl.ravel()) / np.bincount(inv)
    n = min(ny, nx)
    c = np.arange(n) - n // 2
    r2_3d = c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2
    # geometric (log-linear) interpolation in r^2: exact for Gaussians, and zeros of the
    # profile (e.g. Airy minima) stay close to zero instead of being bridged linearly
    floor = prof.max() * 1e-12
    logp = np.log(np.maximum(prof, floor))
    out = np.exp(np.interp(r2_3d.ravel(), uniq, logp))
    out[r2_3d.ravel() > uniq[-1]] = 0.0
    out[out <= floor] = 0.0
    return normalise(out.reshape(n, n, n))


def rotate_to_lateral(psf: np.ndarray, axis: Literal["y", "x"] = "y") -> np.ndarray:
    """Turn the PSF on its side so that its optical (z) axis lies along lateral ``axis``.

    This is a transpose of the ``ZYX`` array without a flip: for ``axis="y"`` the result is
    ``h_rot[z, y, x] = h[y, z, x]`` (the PSF's z offset now runs along y, and its former y
    axis is the new slice normal); for ``axis="x"`` ``h_rot[z, y, x] = h[x, y, z]``. Keeping
    the sign of the offset (no flip) is what makes a lateral slice blurred along y look like
    an axial slice displayed with z along its rows, even for PSFs that are not symmetric in
    z; for z-symmetric PSFs it equals a 90 degree rotation.

    Parameters
    ----------
    psf : np.ndarray
        ``(Z, Y, X)`` PSF, axes ``"ZYX"``.
    axis : {"y", "x"}
        Lateral axis that receives the optical axis.

    Returns
    -------
    np.ndarray
        ``float32`` array, axes ``"ZYX"``: shape ``(Y, Z, X)`` for ``"y"``, ``(X, Y, Z)`` for
        ``"x"`` (sizes of the input).
    """
    h = _check_psf(psf)
    ax = _check_lateral_axis(axis)
    perm = (1, 0, 2) if ax == "y" else (2, 1, 0)
    return np.ascontiguousarray(h.transpose(perm))


def _check_lateral_axis(axis) -> str:
    if not isinstance(axis, str) or axis.lower() not in ("y", "x"):
        raise InputError(f"axis must be 'y' or 'x' (the lateral axis to blur along), got {axis!r}")
    return axis.lower()


def _split_richardson_lucy(rot2d: np.ndarray, iso2d: np.ndarray, n_iter: int) -> np.ndarray:
    """Non-negative k with ``rot2d ~= iso2d * k`` ('same' size as rot2d) by Richardson-Lucy.

    RL keeps k non-negative and of constant sum, and for noise-free kernels converges to an
    exact solution where one exists (a Gaussian split is one). A plain regularised Fourier
    division cannot do that here: the lateral Gaussian has almost no energy near Nyquist, so
    the delta across the axis comes out as a ringing sinc.
    """
    from scipy.signal import fftconvolve

    rot = rot2d / rot2d.sum()
    iso = iso2d / iso2d.sum()
    iso_flip = iso[::-1, ::-1]
    k = np.full(rot.shape, 1.0 / rot.size)
    tiny = 1e-30
    for _ in range(n_iter):
        est = fftconvolve(k, iso, mode="same")
        k = k * fftconvolve(rot / np.maximum(est, tiny), iso_flip, mode="same")
        k = np.clip(k, 0.0, None)
        k /= k.sum()
    return k


def lateral_kernel(psf: np.ndarray | tuple[float, float], mode: Literal["full", "split"],
                   axis: Literal["y", "x"] = "y", *, n_iter: int = 1000) -> np.ndarray:
    """2D kernel that blurs a lateral (YX) slice so it resembles an axial slice.

    ``"full"``: the rotated PSF :func:`rotate_to_lateral` projected along the slice normal
    (summed over its z axis), i.e. ``h_rot`` as seen by structures that are constant along
    the normal. ``"split"``: ``h_split`` solving ``h_rot = h_iso * h_split`` for the projected
    2D kernels, with ``h_iso`` from :func:`isotropic_psf`: a lateral slice already carries
    about ``h_iso``, so adding ``h_split`` gives it the resolution of an axial slice. It is
    computed by Richardson-Lucy deconvolution of the projected ``h_rot`` by the projected
    ``h_iso`` (non-negative and sum 1 by construction; it converges to the exact Gaussian
    split). A regularised Fourier division is not used because it turns the delta across
    the axis into a ringing sinc: the lateral PSF has next to no energy near Nyquist.

    Gaussian shortcut: pass ``psf=(sigma_xy, sigma_z)`` (voxels) to get closed forms:
    ``"full"`` is the 2D Gaussian with sigma_z along ``axis`` and sigma_xy across;
    ``"split"`` is the exact Gaussian split, ``sqrt(sigma_z^2 - sigma_xy^2)`` along ``axis``
    and a delta across (a single row/column). (CSBDeep approximates the split sigma by
    ``sigma_z - sigma_xy``.)

    Parameters
    ----------
    psf : np.ndarray or tuple of two floats
        ``(Z, Y, X)`` PSF (axes ``"ZYX"``, odd sizes) or ``(sigma_xy, sigma_z)``.
    mode : {"full", "split"}
        Which kernel (see above).
    axis : {"y", "x"}
        Lateral axis of the slice that takes the role of z (rows for ``"y"``).
    n_iter : int
        Richardson-Lucy iterations (``"split"`` from an array only). 1000 take well under a
        second for PSFs of a few dozen voxels per side; for the Gaussian 2/8 PSF the residual
        width across the axis is then a variance of about 0.04 px^2.

    Returns
    -------
    np.ndarray
        ``float32`` 2D kernel, axes ``"YX"``, sum 1, non-negative, odd sizes. From an array
        PSF of shape ``(Z, Y, X)`` its shape is ``(Z, X)`` for ``axis="y"`` and ``(Y, Z)`` for
        ``axis="x"``.

    Examples
    --------
    >>> lateral_kernel((2.0, 8.0), "split").shape   # delta across: a single column
    (63, 1)
    """
    if mode not in ("full", "split"):
        raise InputError(f"mode must be 'full' or 'split', got {mode!r}")
    ax = _check_lateral_axis(axis)
    if isinstance(psf, tuple) and len(psf) == 2 and all(np.isscalar(s) for s in psf):
        sxy = check_positive(psf[0], "sigma_xy", allow_zero=True)
        sz = check_positive(psf[1], "sigma_z", allow_zero=True)
        if mode == "full":
            s_along, s_across = sz, sxy
        else:
            if sz < sxy:
                raise InputError(
                    f"split kernel needs sigma_z >= sigma_xy, got sigma_xy={sxy}, sigma_z={sz}; "
                    f"for an isotropic PSF there is nothing to split (use mode='full')")
            s_along, s_across = math.sqrt(sz ** 2 - sxy ** 2), 0.0
        g_along = gauss1d(s_along, half_size(4 * s_along) if s_along > 0 else 0)
        g_across = gauss1d(s_across, half_size(4 * s_across) if s_across > 0 else 0)
        k = g_along[:, None] * g_across[None, :]
        return normalise(k if ax == "y" else k.T)
    h = _check_psf(psf)
    check_shape(h.shape, "psf.shape")
    rot2d = rotate_to_lateral(h, ax).astype(np.float64).sum(axis=0)
    if mode == "full":
        return normalise(rot2d)
    if not isinstance(n_iter, (int, np.integer)) or n_iter < 1:
        raise InputError(
            f"n_iter must be a positive int (Richardson-Lucy iterations), got {n_iter!r}")
    iso2d = isotropic_psf(h).astype(np.float64).sum(axis=0)
    return normalise(_split_richardson_lucy(rot2d, iso2d, int(n_iter)))
