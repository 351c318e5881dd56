"""DQLR's synthetic protocol: phantoms imaged with depth-dependent degradation (blur growing
with depth, attenuation, Poisson + Gaussian noise), with the shallow-quality ground truth;
behind ``sharpstack synth dqlr``, the demo and the benchmark's synthetic tables."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...errors import InputError
from .._base import SynthResult

__all__ = ["DepthStack", "synthetic_depth_stack", "DQLRSynth", "synthesize"]


@dataclass
class DepthStack:
    """A synthetic z-stack whose deeper slices lose sharpness and contrast, with its GT.

    Attributes
    ----------
    degraded : float32 (Z, Y, X)
        What the microscope records: depth-dependent blur, attenuation, Poisson + Gaussian
        noise.
    gt : float32 (Z, Y, X)
        The undegraded shallow-quality stack: the phantom imaged everywhere with the PSF of
        the shallowest slice, no attenuation, no noise.
    sigma_xy, sigma_z, attenuation : float64 (Z,)
        The per-slice PSF widths and intensity factors used.
    deconv_sigma : float64 (Z,)
        The oracle lateral width that separates ``degraded`` from ``gt`` per slice,
        ``sqrt(sigma_xy**2 - sigma_xy[0]**2)`` (what a slice-wise deconvolution should use).
    labels : int32 (Z, Y, X) or None
        Cell or nucleus labels of the phantom.
    """

    degraded: np.ndarray
    gt: np.ndarray
    sigma_xy: np.ndarray
    sigma_z: np.ndarray
    attenuation: np.ndarray
    deconv_sigma: np.ndarray
    kind: str
    seed: int
    labels: np.ndarray | None = None


def synthetic_depth_stack(kind: Literal["membranes", "nuclei"] = "membranes",
                          shape: tuple[int, int, int] = (48, 128, 128), *, seed: int = 0,
                          sigma_xy: tuple[float, float] = (1.0, 3.0),
                          sigma_z: tuple[float, float] = (1.5, 4.0),
                          attenuation: float = 0.3, poisson_peak: float = 200.0,
                          read_noise: float = 2.0, power: float = 1.0) -> DepthStack:
    """The synthetic DQLR protocol: a phantom imaged with depth-dependent degradation.

    The phantom (:func:`sharpstack.phantoms.membranes`, cell diameter 24 voxels, membranes
    2 voxels thick; or :func:`sharpstack.phantoms.nuclei`, radius 6-10 voxels, about one
    nucleus per 25,000 voxels) is blurred with a Gaussian PSF whose widths grow from the
    first to the last slice (``sigma_xy``, ``sigma_z`` as ``(shallow, deep)``, following
    :func:`.depth.depth_profile` with ``power``), multiplied per slice by an
    exponential attenuation from 1 to ``attenuation``, then Poisson noise (``poisson_peak``
    photons at the brightest voxel, i.e. in the shallow slices) and Gaussian read noise of
    ``read_noise`` photons are added (:func:`.depth.depth_blur`,
    :func:`sharpstack.degrade.add_noise`).

    Parameters
    ----------
    kind : {"membranes", "nuclei"}
    shape : (Z, Y, X)
    seed : int
        Phantom and noise seed.
    sigma_xy, sigma_z : (float, float)
        PSF standard deviations (voxels) at the first and last slice.
    attenuation : float
        Intensity factor of the last slice (first: 1), exponential in between.
    poisson_peak, read_noise : float
        Photons at the brightest voxel; read noise standard deviation in photons.
    power : float
        Shape of the depth profiles (1 = linear in depth).
    """
    from ... import degrade, phantoms
    from .depth import depth_blur, depth_profile

    if kind == "membranes":
        phantom, labels = phantoms.membranes(shape, cell_diameter=24.0, thickness=2.0,
                                             seed=seed, return_labels=True)
    elif kind == "nuclei":
        phantom, labels = phantoms.nuclei(shape, density=4e-5, radius=(6.0, 10.0), seed=seed,
                                          return_labels=True)
    else:
        raise InputError(f"kind must be 'membranes' or 'nuclei', got {kind!r}")
    if not 0.0 < attenuation <= 1.0:
        raise InputError(f"attenuation must be in (0, 1] (deep/shallow intensity), got "
                         f"{attenuation}")
    n = phantom.shape[0]
    sxy = depth_profile(n, sigma_xy[0], sigma_xy[1], power=power)
    sz = depth_profile(n, sigma_z[0], sigma_z[1], power=power)
    att = np.exp(depth_profile(n, 0.0, math.log(attenuation), power=power))
    clean = depth_blur(phantom, sxy, sz) * att[:, None, None].astype(np.float32)
    peak = float(clean.max())
    rng = np.random.default_rng([int(seed), 7])
    degraded = degrade.add_noise(clean, poisson_peak=poisson_peak,
                                 gauss_sigma=read_noise * peak / poisson_peak, rng=rng)
    gt = depth_blur(phantom, sxy[0], sz[0])
    deconv = np.sqrt(np.maximum(sxy ** 2 - sxy[0] ** 2, 0.0))
    return DepthStack(degraded=degraded, gt=gt, sigma_xy=sxy, sigma_z=sz, attenuation=att,
                      deconv_sigma=deconv, kind=kind, seed=int(seed), labels=labels)


class DQLRSynth(BaseModel):
    """DQLR's synthetic protocol (:func:`synthetic_depth_stack`): ``n_stacks`` seeded
    training stacks and one held-out test stack with its ground truth."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["membranes", "nuclei"] = Field("membranes", description="Phantom: membranes or nuclei.")
    shape: tuple[int, int, int] = Field((48, 128, 128), description="Stack size Z,Y,X (voxels).")
    n_stacks: int = Field(2, ge=1, le=64, description="Training stacks (seeds seed+1 ...).")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the test stack.")
    sigma_xy_shallow: float = Field(1.0, ge=0, le=32, description="Lateral PSF sigma at the top (px).")
    sigma_xy_deep: float = Field(3.0, ge=0, le=32, description="Lateral PSF sigma at the bottom (px).")
    sigma_z_shallow: float = Field(1.5, ge=0, le=64, description="Axial PSF sigma at the top (px).")
    sigma_z_deep: float = Field(4.0, ge=0, le=64, description="Axial PSF sigma at the bottom (px).")
    attenuation: float = Field(0.3, gt=0, le=1, description="Intensity of the last slice relative to the first.")
    photons: float = Field(50.0, gt=0, le=1e6, description="Photons at the brightest voxel (Poisson noise).")
    read_noise: float = Field(2.0, ge=0, le=1e4, description="Gaussian read noise (photons).")
    pixel_um: float = Field(0.2, gt=0, le=100, description="Lateral pixel size written as calibration (um).")
    z_um: float = Field(0.4, gt=0, le=100, description="z spacing written as calibration (um).")

    @model_validator(mode="after")
    def _check(self) -> DQLRSynth:
        if self.shape[0] < 8 or min(self.shape[1:]) < 32:
            raise ValueError(f"shape {self.shape} is too small; use at least 8 slices of 32x32")
        return self

    def stack(self, seed: int) -> DepthStack:
        return synthetic_depth_stack(
            self.kind, self.shape, seed=seed,
            sigma_xy=(self.sigma_xy_shallow, self.sigma_xy_deep),
            sigma_z=(self.sigma_z_shallow, self.sigma_z_deep), attenuation=self.attenuation,
            poisson_peak=self.photons, read_noise=self.read_noise)

    def describe(self) -> str:
        return (f"synthetic {self.kind} {tuple(self.shape)}: Gaussian PSF sigma_xy "
                f"{self.sigma_xy_shallow:g} -> {self.sigma_xy_deep:g} px, sigma_z "
                f"{self.sigma_z_shallow:g} -> {self.sigma_z_deep:g} px from the first to the "
                f"last slice, attenuation to {self.attenuation:g}, Poisson noise "
                f"({self.photons:g} photons at the brightest voxel) + {self.read_noise:g} "
                f"photons read noise")


def synthesize(options: DQLRSynth) -> SynthResult:
    """``n_stacks`` training stacks and one test stack with its ground truth (arrays; nothing
    written here; ``DQLR.synthesize``)."""
    from ...io import as_dataarray

    vs = {"z": options.z_um, "y": options.pixel_um, "x": options.pixel_um}
    train = [options.stack(options.seed + 1 + i) for i in range(options.n_stacks)]
    test = options.stack(options.seed)
    arrays = {
        "stacks": [as_dataarray(d.degraded, "ZYX", vs) for d in train],
        "test": as_dataarray(test.degraded, "ZYX", vs),
        "ground_truth": as_dataarray(test.gt, "ZYX", vs),
    }
    return SynthResult(
        arrays=arrays, inputs=("stacks",), sample="test",
        info={"protocol": options.describe(), "kind": options.kind,
              "shape": list(options.shape), "n_stacks": options.n_stacks},
        references={"gt": test.gt, "test": test.degraded,
                    "deconv_sigma": test.deconv_sigma})
