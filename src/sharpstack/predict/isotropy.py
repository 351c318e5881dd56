"""Does a package expect a stack resampled to isotropic voxels, and is the input one?

An isotropic-reconstruction package (tag ``isotropic-reconstruction``) whose output z axis
has the input's scale (no upsampling inside) restores a stack that was already resampled to
isotropic voxels. Given a raw anisotropic stack (by its calibration) it runs, but on the
wrong grid: :func:`anisotropic_input_note` says so and names the fix.
"""

from __future__ import annotations

from typing import Any

__all__ = ["expects_isotropic_input", "anisotropic_input_note"]


def _scale(axis: Any) -> float:
    return float(getattr(axis, "scale", 1.0) or 1.0)


def expects_isotropic_input(descr: Any) -> bool:
    """True for a 3D isotropic-reconstruction package that keeps the z size (input resampled
    to isotropic voxels first)."""
    tags = {str(t).lower() for t in (getattr(descr, "tags", None) or ())}
    if "isotropic-reconstruction" not in tags or not descr.inputs or not descr.outputs:
        return False
    z_in = [a for a in descr.inputs[0].axes if str(a.id) == "z"]
    z_out = [a for a in descr.outputs[0].axes if str(a.id) == "z"]
    return bool(z_in and z_out) and abs(_scale(z_in[0]) - _scale(z_out[0])) < 1e-9


def anisotropic_input_note(descr: Any, data: Any) -> str | None:
    """A warning when ``descr`` expects isotropic voxels and ``data``'s calibration says
    z spacing / pixel size >= 1.5; None otherwise (or when the calibration is unknown)."""
    from ..resample import MIN_FACTOR

    if not expects_isotropic_input(descr):
        return None
    vs = dict(data.attrs.get("voxel_size") or {})
    if not all(k in vs for k in "zyx"):
        return None
    ratio = vs["z"] / ((vs["y"] + vs["x"]) / 2)
    if ratio < MIN_FACTOR:
        return None
    return (f"this package expects a stack resampled to isotropic voxels, but the input's "
            f"voxel size is z {vs['z']:g} um / xy {vs['x']:g} um (z/xy = {ratio:.3g}): it "
            f"would be restored on the wrong grid. Rerun with --resample (z interpolated to "
            f"the pixel size first), or resample it yourself: `sharpstack resample INPUT "
            f"RESAMPLED.tif`")
