"""IsoNet's synthetic data: the protocol behind ``sharpstack synth isonet`` (and the demo), and
the volumes of the paper's Table 1 benchmark (:mod:`.bench`).

Both image a phantom of :mod:`sharpstack.phantoms` with a PSF (:mod:`sharpstack.psf`'s
Gaussian or :mod:`.optics`' confocal and light-sheet PSFs) on an isotropic grid, keep every
``factor``-th z slice and add camera noise (:mod:`sharpstack.degrade`, :mod:`.acquisition`);
the isotropic ground truth is the phantom blurred with the isotropic part of the PSF
(:func:`.optics.isotropic_psf`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ... import degrade
from ... import psf as psfmod
from ...errors import InputError
from .._base import SynthResult
from . import acquisition, optics
from .settings import PsfSpec

__all__ = ["IsoNetSynth", "synthesize", "NOISE", "DatasetSpec", "DATASETS", "dataset_shape",
           "make_volume"]


class IsoNetSynth(BaseModel):
    """IsoNet's synthetic protocol: phantom -> PSF -> axial subsampling -> noise."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["nuclei", "membranes", "nuclei+membranes"] = "nuclei"
    shape: tuple[int, int, int] = (128, 128, 128)
    factor: int = Field(8, ge=2, le=32)
    psf: PsfSpec = Field(default_factory=PsfSpec)
    photons: float | None = Field(200.0, gt=0)
    """Photons at the brightest voxel (Poisson noise); None = no Poisson noise."""
    read_noise: float = Field(0.01, ge=0, le=1)
    pixel_um: float = Field(0.2, gt=0, le=100)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self):
        if any(s < 16 for s in self.shape):
            raise ValueError(f"shape {self.shape} is too small; use at least 16 voxels per axis")
        if self.shape[0] % self.factor:
            raise ValueError(f"z size {self.shape[0]} must be a multiple of the factor "
                             f"{self.factor}")
        return self


def synthesize(options: IsoNetSynth) -> SynthResult:
    """Synthetic data of the protocol (arrays; nothing written here): the anisotropic stack,
    its ground truths and the PSF (``IsoNet.synthesize``)."""
    from ... import phantoms
    from ...io import as_dataarray

    psf_spec = options.psf
    if psf_spec.needs_pixel and psf_spec.pixel_um is None:
        psf_spec = psf_spec.model_copy(update={"pixel_um": options.pixel_um})
    h = psf_spec.build()
    labels = None
    if options.kind == "nuclei":
        gt, labels = phantoms.nuclei(options.shape, seed=options.seed, return_labels=True)
    elif options.kind == "membranes":
        gt = phantoms.membranes(options.shape, seed=options.seed)
    else:
        gt = phantoms.nuclei_membranes(options.shape, seed=options.seed)
    iso = acquisition.blur(gt, optics.isotropic_psf(h))
    aniso = acquisition.form_image(gt, h, options.factor, poisson_peak=options.photons,
                               gauss_sigma=options.read_noise, seed=options.seed)
    px, f = options.pixel_um, options.factor
    vs_iso = {"z": px, "y": px, "x": px}
    arrays = {
        "anisotropic": as_dataarray(aniso, "ZYX", {"z": px * f, "y": px, "x": px}),
        "ground_truth": as_dataarray(gt, "ZYX", vs_iso),
        "ground_truth_isotropic": as_dataarray(iso, "ZYX", vs_iso),
        "psf": as_dataarray(h, "ZYX", vs_iso),
    }
    if labels is not None:
        arrays["labels"] = as_dataarray(labels.astype(np.uint16), "ZYX", vs_iso)
    return SynthResult(
        arrays=arrays, inputs=("anisotropic",), sample="anisotropic",
        settings={"factor": f, "psf": psf_spec.model_dump(mode="json")},
        info={"factor": f, "psf_text": psf_spec.describe(), "shape": list(options.shape),
              "kind": options.kind},
        references={"ground_truth_isotropic": iso, "anisotropic": aniso, "psf": h,
                    "ground_truth": gt, "labels": labels})


# --------------------------------------------------------------------------------------------
# the volumes of Table 1 (see the docstring of :mod:`.bench`)
# --------------------------------------------------------------------------------------------

NOISE: dict[str, float] = {"poisson_peak": 300.0, "read_noise": 2.0}
"""Camera noise of every acquisition: photons at the brightest blurred voxel, and Gaussian
read noise (standard deviation) in photons."""


@dataclass(frozen=True)
class DatasetSpec:
    """One row of Table 1: phantom, PSF and axial factor.

    Attributes
    ----------
    name : str
        Key (``"nuclei"``, ``"membranes"``, ``"nuclei+membranes"``).
    title : str
        Row title for the table.
    phantom : str
        Function of :mod:`sharpstack.phantoms`.
    psf_kind : str
        ``"gaussian"``, ``"confocal"`` or ``"lightsheet"``.
    psf_kwargs : dict
        Keyword arguments of the PSF function (:mod:`sharpstack.psf` or :mod:`.optics`).
    factor : int
        Axial subsampling factor (z spacing / lateral pixel size).
    voxel_size_um : float or None
        Isotropic voxel size of the phantom grid (None: the Gaussian PSF is given in voxels).
    """

    name: str
    title: str
    phantom: str
    psf_kind: str
    psf_kwargs: dict[str, Any]
    factor: int
    voxel_size_um: float | None

    def make_psf(self) -> np.ndarray:
        """The dataset's PSF on the phantom grid, ``(kz, ky, kx)``, sum 1."""
        fn = {"gaussian": psfmod.gaussian_psf, "confocal": optics.confocal_psf,
              "lightsheet": optics.lightsheet_psf}[self.psf_kind]
        return np.asarray(fn(**self.psf_kwargs), dtype=np.float32)


DATASETS: dict[str, DatasetSpec] = {
    "nuclei": DatasetSpec("nuclei", "nuclei (Gaussian σ 2/8, ×8)", "nuclei", "gaussian",
                          {"sigma_xy": 2.0, "sigma_z": 8.0}, 8, None),
    "membranes": DatasetSpec("membranes", "membranes (confocal NA 1.1, ×4)", "membranes",
                             "confocal", {"na": 1.1, "voxel_size_um": 0.10}, 4, 0.10),
    "nuclei+membranes": DatasetSpec(
        "nuclei+membranes", "nuclei + membranes (light-sheet NA 0.8/0.1, ×6)",
        "nuclei_membranes", "lightsheet",
        {"na_detect": 0.8, "na_illum": 0.1, "voxel_size_um": 0.15}, 6, 0.15),
}
"""The paper's three datasets (see the module docstring for the choice of pixel sizes)."""


def dataset_shape(size: int | Sequence[int], factor: int) -> tuple[int, int, int]:
    """The phantom shape for a requested size: z cut to the span of the acquired slices.

    An acquisition of ``n`` slices ``factor`` planes apart spans ``(n - 1) * factor + 1``
    planes of the isotropic grid, its first and last planes acquired. The benchmark volume is
    that span, so that no method is scored on planes beyond the last acquired slice (which
    only an extrapolation can fill: 7 of 128 planes at factor 8, 5.5 % of a 128³ volume
    against 1.4 % of the paper's 512³).

    Parameters
    ----------
    size : int or (Z, Y, X)
        Requested volume size in voxels (an int means a cube).
    factor : int
        Axial subsampling factor of the dataset.

    Returns
    -------
    (Z', Y, X) : tuple of int
        ``Z' = factor * ((Z - 1) // factor) + 1`` (the largest span that fits in Z);
        Y and X unchanged.

    Examples
    --------
    >>> dataset_shape(128, 6)
    (127, 128, 128)
    """
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        shp = (int(size),) * 3
    else:
        try:
            shp = tuple(int(s) for s in size)
        except TypeError:
            raise InputError(f"size must be an int or (Z, Y, X), got {size!r}") from None
    if len(shp) != 3:
        raise InputError(f"size must be an int or three sizes (Z, Y, X), got {size!r}")
    z, y, x = shp
    if min(y, x) < 32:
        raise InputError(f"size {shp}: Y and X must be at least 32 (the smallest training "
                         f"patch); give a larger --size")
    n = (z - 1) // factor + 1 if z >= 1 else 0
    if n < 4:
        raise InputError(f"size {shp}: Z must give at least 4 acquired slices at factor "
                         f"{factor} (Z >= {3 * factor + 1}); give a larger --size")
    return factor * (n - 1) + 1, y, x


def make_volume(spec: DatasetSpec, shape: tuple[int, int, int], seed: int,
                noise: dict[str, float] | None = None) -> dict[str, Any]:
    """Ground truth, isotropic GT and anisotropic acquisition of one benchmark volume.

    The field of view is a crop of a larger specimen: the phantom is drawn with a margin of
    half the PSF size on every side, blurred, and cropped, so that the borders of the
    acquisition (and of the isotropic GT) hold the blur of what lies outside the field of
    view, as in a microscope, instead of a mirror image of the inside (a reflecting border
    would mirror nuclei into the first 3 σ_z = 24 planes of the Gaussian dataset).

    Parameters
    ----------
    spec : DatasetSpec
    shape : (Z, Y, X)
        Field-of-view shape, ``Z = (n - 1) * spec.factor + 1`` for ``n`` acquired slices
        (see :func:`dataset_shape`).
    seed : int
        Phantom seed; the noise uses ``seed + 10_000``.
    noise : dict, optional
        ``{"poisson_peak": photons, "read_noise": photons}``; default :data:`NOISE`.

    Returns
    -------
    dict
        ``gt`` (Z, Y, X), ``labels`` (Z, Y, X) int32 or None (nuclei only), ``iso_gt``
        (Z, Y, X), ``stack`` (n, Y, X) the acquisition (planes ``0, factor, ..., Z - 1``),
        ``blurred`` (Z, Y, X) the acquisition upsampled linearly along z, ``psf``
        (kz, ky, kx), ``gauss_sigma`` float. All arrays float32 except the labels.
    """
    from ... import phantoms

    f = spec.factor
    if (shape[0] - 1) % f:
        raise InputError(f"z size {shape[0]} is not (n - 1) x factor + 1 for factor {f}; "
                         f"use dataset_shape() to cut it")
    noise = dict(NOISE if noise is None else noise)
    psf = spec.make_psf()
    margin = tuple(k // 2 for k in psf.shape)
    big = tuple(s + 2 * m for s, m in zip(shape, margin))
    crop = tuple(slice(m, m + s) for s, m in zip(shape, margin))
    labels = None
    if spec.phantom == "nuclei":
        gt, labels = phantoms.nuclei(big, seed=seed, return_labels=True)
        labels = np.ascontiguousarray(labels[crop])
    elif spec.phantom == "membranes":
        gt = phantoms.membranes(big, seed=seed)
    else:
        gt = phantoms.nuclei_membranes(big, seed=seed)
    iso_gt = np.ascontiguousarray(acquisition.blur(gt, optics.isotropic_psf(psf))[crop])
    clean = np.ascontiguousarray(acquisition.blur(gt, psf)[crop])
    gt = np.ascontiguousarray(gt[crop])
    vmax = float(clean.max())
    peak = float(noise["poisson_peak"])
    gauss_sigma = float(noise["read_noise"]) * vmax / peak
    noisy = degrade.add_noise(clean, poisson_peak=peak, gauss_sigma=gauss_sigma,
                              rng=seed + 10_000)
    stack = np.ascontiguousarray(acquisition.subsample(noisy, f, axis=0), dtype=np.float32)
    blurred = acquisition.upsample_linear(stack, f, axis=0)[: shape[0]]
    return {"gt": gt, "labels": labels, "iso_gt": iso_gt, "stack": stack,
            "blurred": np.ascontiguousarray(blurred), "psf": psf, "gauss_sigma": gauss_sigma}
