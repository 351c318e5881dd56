"""The simple 3D nuclei segmentation pipeline of the IsoNet paper (Weigert et al. 2017).

Section "Simple 3D Segmentation" of the paper: a global *intermodes* threshold, holes
closed, touching nuclei split by a 3D watershed on the Euclidean distance transform. The
paper scores it with SEG (:func:`sharpstack.metrics.seg_score`): isotropic GT 0.923, blurred
input 0.742, IsoNet-2 output 0.913.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from ..._axes import check_axes
from ...errors import InputError
from ...metrics.arrays import check_finite, to_numpy

__all__ = ["segment_nuclei", "threshold_intermodes"]


def _n_modes(h: np.ndarray) -> int:
    """Number of strict local maxima of ``h`` at interior bins (ImageJ's ``bimodalTest``)."""
    mid = h[1:-1]
    return int(np.count_nonzero((h[:-2] < mid) & (h[2:] < mid)))


def threshold_intermodes(image, *, nbins: int = 256, max_iterations: int = 10000) -> float:
    """Global threshold by the *intermodes* method (Prewitt & Mendelsohn 1966).

    scikit-image has no intermodes threshold, so this is a port of ImageJ's
    ``AutoThresholder.Intermodes`` (itself from A. Niemistö's MATLAB code): a histogram of
    ``nbins`` bins spanning ``[min, max]`` of the image is smoothed by a 3-point running mean
    (zeros beyond both ends) again and again until it has exactly two local maxima (strict,
    end bins excluded); the threshold is the midpoint of the two peaks.

    The one difference from ImageJ: the midpoint is returned in intensity units, as the mean
    of the two peak bins' centres, rather than floored to a bin index.

    Parameters
    ----------
    image : array_like, any shape
        Intensities; foreground is ``image > threshold``.
    nbins : int
        Number of histogram bins (ImageJ: 256).
    max_iterations : int
        Smoothing passes before giving up (ImageJ: 10000).

    Returns
    -------
    float
        The threshold, in the image's intensity units.

    Raises
    ------
    InputError
        If the image is constant or not finite, or if the histogram does not become bimodal
        within ``max_iterations`` passes (unimodal histogram, or very unequal peaks).
    """
    a = to_numpy(image, "image")
    if a.size == 0:
        raise InputError("image is empty; pass a non-empty image")
    check_finite(a, "image")
    if int(nbins) < 3:
        raise InputError(f"nbins must be at least 3, got {nbins}")
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        raise InputError(f"image is constant ({lo}); intermodes needs a bimodal histogram, "
                         f"pass threshold=... explicitly or check the input")
    h, edges = np.histogram(a, bins=int(nbins), range=(lo, hi))
    h = h.astype(np.float64)
    it = 0
    while _n_modes(h) != 2:
        if it >= max_iterations:
            raise InputError(
                f"intermodes threshold did not converge: the histogram was still not bimodal "
                f"after {max_iterations} smoothing passes (it looks unimodal or its peaks are "
                f"very unequal); pass a threshold explicitly or use another method")
        # 3-point running mean with zero padding, exactly as ImageJ's loop
        h = (np.concatenate(([0.0], h[:-1])) + h + np.concatenate((h[1:], [0.0]))) / 3.0
        it += 1
    mid = h[1:-1]
    peaks = np.flatnonzero((h[:-2] < mid) & (h[2:] < mid)) + 1
    width = (hi - lo) / int(nbins)
    return float(lo + (peaks.mean() + 0.5) * width)


def segment_nuclei(volume, *, axes: str = "ZYX", min_distance: int = 5,
                   threshold: float | None = None,
                   sampling: tuple[float, float, float] | None = None) -> np.ndarray:
    """Segment bright nuclei in a 3D volume with the IsoNet paper's pipeline.

    1. global threshold: ``volume > threshold`` (default :func:`threshold_intermodes`);
    2. fill holes: :func:`scipy.ndimage.binary_fill_holes` in 3D, i.e. every background
       cavity fully enclosed by foreground (not connected to the volume border) is filled;
    3. 3D watershed (:func:`skimage.segmentation.watershed`, 6-connectivity) of the negated
       Euclidean distance transform inside the mask, flooded from markers at its local maxima.

    Marker choice: the local maxima are found by :func:`skimage.feature.peak_local_max`
    with a cubic footprint of side ``2 * min_distance + 1`` and peaks at least
    ``min_distance`` voxels apart, separately in each connected component of the mask (so
    every component gets at least one marker). This is the usual "distance-transform
    watershed" and the one parameter is in voxels (about the smallest nucleus radius); it was
    preferred over h-maxima because the h of the latter has no obvious value across volumes.
    A component left without a marker (too small for a peak) keeps one label of its own.

    Parameters
    ----------
    volume : array_like, shape (Z, Y, X)
        Intensity volume with bright nuclei on a dark background; isotropic voxels unless
        ``sampling`` is given.
    axes : str
        Must be ``"ZYX"``.
    min_distance : int
        Minimum distance in voxels between two seeds (about the smallest nucleus radius);
        smaller values split more.
    threshold : float, optional
        Global threshold in intensity units; ``None`` computes the intermodes threshold.
    sampling : tuple of 3 floats, optional
        Voxel size along (z, y, x) for the distance transform (anisotropic volumes).

    Returns
    -------
    numpy.ndarray, int32, shape (Z, Y, X)
        Label image: 0 background, 1..N nuclei.
    """
    v = to_numpy(volume, "volume", axes)
    check_axes(axes, v.ndim, allowed=("ZYX",))
    check_finite(v, "volume")
    md = int(min_distance)
    if md < 1:
        raise InputError(f"min_distance must be a positive number of voxels, got {min_distance}")
    if sampling is not None:
        sampling = tuple(float(s) for s in sampling)
        if len(sampling) != 3 or min(sampling) <= 0:
            raise InputError(f"sampling must be 3 positive voxel sizes (z, y, x), got {sampling}")
    t = threshold_intermodes(v) if threshold is None else float(threshold)

    mask = ndi.binary_fill_holes(v > t)
    if not mask.any():
        return np.zeros(v.shape, dtype=np.int32)
    comps, _ = ndi.label(mask)
    dist = ndi.distance_transform_edt(mask, sampling=sampling)
    peaks = peak_local_max(dist, min_distance=md, labels=comps, exclude_border=False)
    markers = np.zeros(v.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    labels = watershed(-dist, markers, mask=mask).astype(np.int32, copy=False)

    rest = mask & (labels == 0)
    if rest.any():
        extra, _ = ndi.label(rest)
        labels[rest] = extra[rest] + len(peaks)
    return labels
