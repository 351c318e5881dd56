"""Synthetic data of disentangled deblurring: widefield defocus series of phantom fields
(:func:`synthetic_series`), and the data of ``sharpstack synth disentangled`` and the demo."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import InputError
from .._base import SynthResult
from .data import DefocusSeries
from .settings import DisentangledSynth

__all__ = ["synthetic_series", "synthesize"]


def synthetic_series(n_identities: int = 24, size: int = 96, *,
                     dz_um: Sequence[float] = tuple(np.round(np.arange(-3.0, 3.01, 0.5), 3)),
                     pixel_size_um: float = 0.2, na: float = 1.0,
                     poisson_peak: float | None = 200.0, gauss_sigma: float = 0.01,
                     seed: int = 0, fields: np.ndarray | None = None
                     ) -> tuple[DefocusSeries, np.ndarray]:
    """A synthetic widefield defocus series with known ground truth.

    Every identity is a 2D field (:func:`sharpstack.phantoms.defocus_fields`: a lateral slice
    of a nuclei + membranes phantom, or the given ``fields``), imaged at every defocus in
    ``dz_um`` with the 2D widefield PSF of :func:`.defocus.defocus_psf_2d` (NA ``na``,
    oil objective, water sample 3 um deep: PSFs above and below focus differ) and Poisson +
    Gaussian noise (:func:`.defocus.defocus_series`).

    Returns
    -------
    (DefocusSeries, ndarray)
        The series (in-focus plane: ``dz = 0``, which ``dz_um`` must contain) and the clean
        fields ``(N, Y, X)``.
    """
    from ... import phantoms
    from .defocus import defocus_psf_2d, defocus_series

    dz = np.asarray(dz_um, dtype=np.float64)
    zero = np.flatnonzero(np.isclose(dz, 0.0))
    if dz.ndim != 1 or len(zero) != 1 or len(dz) < 3:
        raise InputError(f"dz_um must list at least 3 defocus values including exactly one 0 "
                         f"(the in-focus plane), got {list(dz_um)}")
    if fields is None:
        gt = phantoms.defocus_fields(n_identities, size, seed=seed)
    else:
        gt = np.asarray(fields, dtype=np.float32)
        if gt.ndim != 3:
            raise InputError(f"fields must be (N, Y, X), got shape {gt.shape}")
    kernels = defocus_psf_2d(dz, pixel_size_um=pixel_size_um, na=na)
    side = min(gt.shape[1:])
    if kernels.shape[-1] >= side:
        c, h = kernels.shape[-1] // 2, (side - 1) // 2 - 1
        kernels = kernels[:, c - h:c + h + 1, c - h:c + h + 1]
        kernels = kernels / kernels.sum(axis=(1, 2), keepdims=True)
    stack = defocus_series(gt, kernels, poisson_peak=poisson_peak, gauss_sigma=gauss_sigma,
                           seed=seed + 1)
    steps = np.diff(dz)
    spacing = float(steps[0]) if np.allclose(steps, steps[0]) else None
    names = [f"synthetic {i + 1}" for i in range(len(gt))]
    return DefocusSeries(stack, np.full(len(gt), int(zero[0])), names, spacing), gt


def synthesize(options: DisentangledSynth) -> SynthResult:
    """The data of :class:`DisentangledSynth` ``options``: the training series, the 2D sample
    and its whole series and in-focus plane."""
    from ...io import as_dataarray

    o = options
    dz = o.dz()
    series, gt = synthetic_series(o.identities + 1, o.size, dz_um=dz,
                                  pixel_size_um=o.pixel_um, na=o.na,
                                  poisson_peak=o.photons, gauss_sigma=o.read_noise,
                                  seed=o.seed)
    vs = {"z": o.dz_step, "y": o.pixel_um, "x": o.pixel_um}
    stacks = [as_dataarray(series.images[i], "ZYX", vs) for i in range(o.identities)]
    sample_stack = series.images[-1]
    focus = int(series.focus[-1])
    k = focus + int(round(o.sample_dz / o.dz_step))
    return SynthResult(
        arrays={"series": stacks,
                "sample": as_dataarray(sample_stack[k], "YX", {"y": o.pixel_um,
                                                               "x": o.pixel_um}),
                "sample_series": as_dataarray(sample_stack, "ZYX", vs),
                "sample_infocus": as_dataarray(sample_stack[focus], "YX",
                                               {"y": o.pixel_um, "x": o.pixel_um})},
        inputs=("series",), sample="sample",
        settings={"focus_plane": focus + 1},
        info={"source": f"synthetic widefield defocus series: {o.identities} fields of "
                        f"{o.size}x{o.size} px, {len(dz)} planes dz = {dz[0]:g}..{dz[-1]:g}"
                        f" um (step {o.dz_step:g}), NA {o.na}, pixel {o.pixel_um} um, "
                        f"photons {o.photons}, read noise {o.read_noise}",
              "sample_dz_um": o.sample_dz, "focus_plane": focus + 1},
        references={"sample": sample_stack[k], "sample_series": sample_stack,
                    "sample_infocus": sample_stack[focus], "sample_field": gt[-1],
                    "focus": focus})
