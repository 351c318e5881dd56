"""ZSE-GAN's synthetic specimen: a z-scan through a thin section (:func:`zscan`).

The test input and cover of ZSE-GAN packages and the demo's data (the paper's real z-scans
may not be redistributed). The in-focus field is one of
:func:`sharpstack.phantoms.defocus_fields` (shared with the disentangled deblurring defocus
series); the read noise is :func:`sharpstack.degrade.add_noise`.
"""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from ...phantoms import check_positive, check_shape, defocus_fields

__all__ = ["zscan"]


def zscan(shape: tuple[int, int, int] = (29, 128, 128), *, seed: int = 0,
          focal_plane: int | None = None, sigma_max: float = 4.0, brightfield: bool = True,
          gauss_sigma: float = 0.01, cell_diameter: float = 24.0,
          return_field: bool = False):
    """A synthetic z-scan through a thin section: one 2D specimen seen at many focal planes.

    The specimen is one in-focus field of :func:`sharpstack.phantoms.defocus_fields` (cells
    and nuclei); plane ``k`` is that field blurred by a Gaussian of standard deviation
    ``sigma_max * |k - focal_plane| / max_distance`` (geometric defocus grows linearly with
    the distance from focus; the plane farthest from focus gets ``sigma_max``), plus
    Gaussian read noise. With ``brightfield`` the contrast is that of a stained section in
    transmitted light (dark cells on a bright background, ``1 - 0.8 f``), as in the ZSE-GAN
    paper's brain z-scans. Used as the synthetic test input of ZSE-GAN packages (the real
    z-scans may not be redistributed).

    Parameters
    ----------
    shape : (Z, Y, X)
        Planes and lateral size.
    focal_plane : int, optional
        0-based index of the in-focus plane (default the centre, ``(Z - 1) // 2``).
    sigma_max : float
        Blur (pixels) of the plane farthest from focus.
    gauss_sigma : float
        Read noise standard deviation (intensities in [0, 1]).

    Returns
    -------
    np.ndarray, float32 (Z, Y, X) in [0, 1]; with ``return_field`` also the noise-free
    in-focus image (Y, X).
    """
    import scipy.ndimage as ndi

    from ... import degrade

    z, y, x = check_shape(shape)
    if y != x:
        raise InputError(f"zscan needs a square lateral size (Y == X), got {y}x{x}")
    f = (z - 1) // 2 if focal_plane is None else int(focal_plane)
    if not 0 <= f < z:
        raise InputError(f"focal_plane must be in [0, {z - 1}], got {focal_plane}")
    sigma_max = check_positive(sigma_max, "sigma_max")
    field = defocus_fields(1, y, seed=seed, cell_diameter=cell_diameter)[0]
    if brightfield:
        field = 1.0 - 0.8 * field
    far = max(f, z - 1 - f, 1)
    planes = []
    for k in range(z):
        s = sigma_max * abs(k - f) / far
        planes.append(ndi.gaussian_filter(field, s, mode="reflect") if s > 0 else field)
    stack = np.stack(planes).astype(np.float32)
    rng = np.random.default_rng(seed + 1)
    stack = degrade.add_noise(stack, poisson_peak=None, gauss_sigma=float(gauss_sigma), rng=rng)
    stack = np.clip(stack, 0.0, 1.0).astype(np.float32)
    return (stack, field.astype(np.float32)) if return_field else stack

