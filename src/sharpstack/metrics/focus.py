"""Sharpness without a reference: FM (De & Masilamani 2013), PIQE, gradient statistics (the
ZSE-GAN paper's tables)."""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from .._axes import check_axes
from ..errors import InputError
from .arrays import check_data_range, check_finite, to_numpy

def focus_measure(image, *, axes: str = "YX", threshold: float = 1e-3) -> float:
    """Image sharpness measure FM of De & Masilamani (Procedia Engineering 64, 2013).

    ``A = |fftshift(fft2(I))|``; ``FM = #(A > threshold * max(A)) / (rows * cols)`` with the
    paper's ``threshold = 1/1000``: the fraction of frequency components whose magnitude
    exceeds a thousandth of the largest one (usually the DC term). Sharper images carry more
    high-frequency energy and score higher; FM does not depend on the intensity scale (it is
    invariant to multiplying the image by a positive constant). The image is used as it is
    (no windowing, no mean removal), as in the paper.

    Parameters
    ----------
    image : array_like, shape (Y, X) (or (N, Y, X) with ``axes="ZYX"``: one FM per plane)
        A real 2D image (horizontal section or vertical section, any numeric dtype).
    axes : {"YX", "ZYX"}
        ``"ZYX"`` scores every plane of a stack and returns their mean.
    threshold : float
        Fraction of the maximum magnitude a component must exceed (paper: 1e-3).

    Returns
    -------
    float
        FM in (0, 1]; ``1 / (rows * cols)`` for a constant non-zero image, 1 for a single
        bright pixel (a flat spectrum).

    Examples
    --------
    >>> import numpy as np
    >>> focus_measure(np.ones((8, 8)))
    0.015625
    """
    a = to_numpy(image, "image", axes)
    ax = check_axes(axes, a.ndim, allowed=("YX", "ZYX"))
    if a.size == 0:
        raise InputError("image is empty; pass a non-empty 2D image")
    check_finite(a, "image")
    if not (np.isfinite(threshold) and 0.0 < threshold < 1.0):
        raise InputError(f"threshold must be in (0, 1) (the paper uses 0.001), got {threshold}")
    planes = a[None] if ax == "YX" else a
    vals = []
    for plane in planes:
        # fftshift does not change which magnitudes exceed the threshold; kept to mirror the
        # paper's formula
        mag = np.abs(np.fft.fftshift(np.fft.fft2(plane.astype(np.float64))))
        m = float(mag.max())
        if m == 0.0:
            raise InputError("image is all zeros; FM is undefined for an empty image")
        vals.append(float(np.count_nonzero(mag > threshold * m)) / plane.size)
    return float(np.mean(vals))


# --------------------------------------------------------------------------------------------
# PIQE and gradient statistics
# --------------------------------------------------------------------------------------------

def _image2d(image, name: str) -> np.ndarray:
    a = to_numpy(image, name, "YX")
    if a.ndim != 2:
        raise InputError(f"{name} must be a 2D image (Y, X), got shape {a.shape}; score a "
                         f"stack plane by plane (e.g. image[k] for plane k)")
    if a.size == 0:
        raise InputError(f"{name} is empty; pass a non-empty 2D image")
    check_finite(a, name)
    return a


def _gauss7(sigma: float = 7.0 / 6.0) -> np.ndarray:
    x = np.arange(-3, 4, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def piqe(image, *, data_range: float) -> float:
    """PIQE no-reference quality score (Venkatanath et al., NCC 2015); lower is better.

    A line-by-line port of MATLAB's ``piqe`` (Image Processing Toolbox, 2018), which the
    method papers used; hand-written because no maintained Python library implements it
    (scikit-image has none; pyiqa pulls in a deep-learning stack):

    1. the image is padded to a multiple of 16 by replicating its last row/column (so a
       128x29 vertical section is not truncated), scaled to 0-255 by ``255 / data_range``
       and rounded (MATLAB: ``round(255 * im2double(I))``);
    2. MSCN coefficients ``(I - mu) / (sigma + 1)`` with a 7x7 Gaussian window
       (sigma 7/6, replicate borders);
    3. every 16x16 block with (sample) variance > 0.1 is active; an active block scores
       ``1 - var`` if one of the 11 six-pixel segments of one of its four edges has a
       (sample) standard deviation < 0.1 (noticeable artefact), plus ``var`` if
       ``sigma > 2 beta`` (noise criterion, ``beta`` from the ratio of the standard
       deviations of the two centre columns and the rest of the block; MATLAB removes
       columns 8 and 10 for "the rest", which is kept here);
    4. ``score = 100 (sum of block scores + 1) / (number of active blocks + 1)``.

    Parameters
    ----------
    image : array_like, shape (Y, X)
        A 2D grayscale image.
    data_range : float
        The intensity that maps to 255 (255 for 8-bit data, 1.0 for images in [0, 1]).

    Returns
    -------
    float
        PIQE in [0, 100] for ordinary images; 100 for a uniform image (no active block).
    """
    a = _image2d(image, "image").astype(np.float64)
    r = check_data_range(data_range)
    bs = 16
    rows, cols = a.shape
    a = np.pad(a, ((0, (-rows) % bs), (0, (-cols) % bs)), mode="edge")
    img = np.round(255.0 * a / r)
    g = _gauss7()

    def blur(v):
        return ndi.correlate1d(ndi.correlate1d(v, g, axis=0, mode="nearest"), g, axis=1,
                               mode="nearest")

    mu = blur(img)
    sigma = np.sqrt(np.abs(blur(img * img) - mu * mu))
    imnorm = (img - mu) / (sigma + 1.0)
    dist, active = 0.0, 0
    seg_idx = np.arange(6)[None, :] + np.arange(bs - 6 + 1)[:, None]  # 11 segments of 6
    keep = np.ones(bs, dtype=bool)
    keep[[7, 9]] = False  # MATLAB deletes column 8, then column 9 of the shortened block
    for i in range(0, imnorm.shape[0], bs):
        for j in range(0, imnorm.shape[1], bs):
            block = imnorm[i:i + bs, j:j + bs]
            var = float(np.var(block, ddof=1))
            if not var > 0.1:
                continue
            active += 1
            edges = np.stack([block[0, :], block[:, bs - 1], block[bs - 1, :], block[:, 0]])
            impaired = bool((np.std(edges[:, seg_idx], axis=2, ddof=1) < 0.1).any())
            sig = float(np.sqrt(var))
            centre = np.concatenate([block[:, 7], block[:, 8]])
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = float(np.std(centre, ddof=1)) / float(np.std(block[:, keep], ddof=1))
                if np.isnan(ratio):
                    ratio = 0.0
                beta = abs(sig - ratio) / max(sig, ratio)
            noisy = bool(sig > 2.0 * beta)
            dist += (1.0 - var) * impaired + var * noisy
    return float((dist + 1.0) / (active + 1.0) * 100.0)


def gradient_magnitude(image, *, data_range: float) -> np.ndarray:
    """Gradient magnitude ``sqrt(gy**2 + gx**2)`` of ``image / data_range`` per pixel.

    Derivatives by ``numpy.gradient`` (central differences inside, one-sided at the
    borders), in intensity units of ``data_range`` per pixel: a ramp rising by ``data_range``
    over ``n`` pixels has magnitude ``1 / n`` everywhere.

    Parameters
    ----------
    image : array_like, shape (Y, X)
    data_range : float
        Intensity range of the image (1.0 for [0, 1] data, 255 for 8-bit data).

    Returns
    -------
    numpy.ndarray, float64, shape (Y, X)
    """
    a = _image2d(image, "image").astype(np.float64) / check_data_range(data_range)
    if min(a.shape) < 2:
        raise InputError(f"image of shape {a.shape} is too small for a gradient; it needs at "
                         f"least 2 pixels along each axis")
    gy, gx = np.gradient(a)
    return np.hypot(gy, gx)


def mean_abs_gradient(image, *, data_range: float) -> float:
    """Mean of :func:`gradient_magnitude` over the image (the paper's "average gradient")."""
    return float(gradient_magnitude(image, data_range=data_range).mean())


def gradient_histogram(image, *, data_range: float, bins: int = 50,
                       max_gradient: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Normalised histogram of :func:`gradient_magnitude` (the paper's Fig. 6).

    Parameters
    ----------
    bins : int
        Number of equal bins on ``[0, max_gradient]``; larger magnitudes go into the last.
    max_gradient : float
        Upper end of the histogram (intensity units of ``data_range`` per pixel).

    Returns
    -------
    (frequency, edges) : ndarrays of shape (bins,) and (bins + 1,)
        Fraction of pixels per bin (sums to 1) and the bin edges.
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise InputError(f"bins must be a positive integer, got {bins!r}")
    if not (np.isfinite(max_gradient) and max_gradient > 0):
        raise InputError(f"max_gradient must be a positive number, got {max_gradient!r}")
    mag = gradient_magnitude(image, data_range=data_range)
    counts, edges = np.histogram(np.minimum(mag, max_gradient), bins=int(bins),
                                 range=(0.0, float(max_gradient)))
    return counts / mag.size, edges


_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)


def laplacian_difference(img: np.ndarray) -> np.ndarray:
    """Immerkaer's (1996) Laplacian-difference response of a 2D image (valid part: one pixel
    less on every side), float64. Smooth structure gives zero; white noise of std sigma gives
    a response of std 6 sigma, so a noise level is ``sqrt(pi/2) * mean|r| / 6`` (Gaussian)
    or ``1.4826 * median|r| / 6`` (robust to edges)."""
    r = ndi.convolve(np.asarray(img, dtype=np.float64), _IMMERKAER, mode="reflect")
    return r[1:-1, 1:-1]


def texture_peak(images, *, f_min: float = 0.15) -> tuple[float, float, float]:
    """Strongest periodic texture in a set of 2D images, in any direction.

    The mean 2D power spectrum of ``images`` (``(N, Y, X)`` or one ``(Y, X)``; each
    mean-subtracted and Hann-windowed) is divided, bin by bin, by the median of its ring of
    equal radial frequency (1-bin-wide rings); the result's maximum over the rings above
    ``f_min`` cycles/px is returned with its frequency ``(ratio, fx, fy)``. Natural images and
    noise stay within a few times their ring's median (a real transmitted-light plane: 4.5);
    a texture on a fixed period and orientation (a generator's grid or hatching) is a spike
    hundreds of times above it. Measures along the x and y axes only (e.g. the power at
    1/4 cycles/px along x) miss oblique textures; this one does not. numpy's FFT: no library
    offers this ring-normalised peak.
    """
    a = np.asarray(images, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or min(a.shape[1:]) < 16:
        raise ValueError(f"texture_peak needs (N, Y, X) images of at least 16x16, got {a.shape}")
    ny, nx = a.shape[1:]
    win = np.outer(np.hanning(ny), np.hanning(nx))
    power = np.zeros((ny, nx))
    for im in a:
        power += np.abs(np.fft.fft2((im - im.mean()) * win)) ** 2
    power = np.fft.fftshift(power)
    fy = np.fft.fftshift(np.fft.fftfreq(ny))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(nx))[None, :]
    r = np.hypot(fy, fx)
    step = 1.0 / max(ny, nx)
    ring = np.floor(r / step).astype(int)
    ratio = np.zeros_like(power)
    for k in range(int(np.ceil(f_min / step)), int(0.5 / step)):
        m = ring == k
        med = np.median(power[m])
        ratio[m] = power[m] / (med + 1e-30)
    iy, ix = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return float(ratio[iy, ix]), float(fx[0, ix]), float(fy[iy, 0])
