"""The one axes validator: every array in sharpstack travels with an explicit axes string."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import InputError

__all__ = ["check_axes"]

_KNOWN = "TCZYXBS"


def check_axes(axes: str, ndim: int | None = None, *, allowed: Iterable[str] | None = None,
               required: str = "", name: str = "axes") -> str:
    """Normalise and check an axes string such as ``"ZYX"`` or ``"czyx"``.

    Parameters
    ----------
    axes : str
        One letter per array dimension (case-insensitive), from ``T C Z Y X B S``.
    ndim : int, optional
        Number of array dimensions the string must describe.
    allowed : iterable of str, optional
        Whole axes strings that are accepted, e.g. ``("ZYX", "CZYX")``.
    required : str
        Letters that must be present.
    name : str
        What to call the argument in error messages.

    Returns
    -------
    str
        The upper-case axes string.

    Examples
    --------
    >>> check_axes("zyx", 3)
    'ZYX'
    """
    if not isinstance(axes, str):
        raise InputError(f"{name} must be a string like 'ZYX', got {type(axes).__name__}")
    ax = axes.upper()
    bad = [a for a in ax if a not in _KNOWN]
    if bad:
        raise InputError(f"{name}={axes!r} has unknown axis letter(s) {bad}; use letters from {_KNOWN}")
    if len(set(ax)) != len(ax):
        raise InputError(f"{name}={axes!r} repeats an axis letter")
    if ndim is not None and len(ax) != ndim:
        raise InputError(
            f"{name}={axes!r} names {len(ax)} axes but the array has {ndim} dimensions; "
            f"give one letter per dimension")
    missing = [a for a in required.upper() if a not in ax]
    if missing:
        raise InputError(f"{name}={axes!r} lacks required axis/axes {''.join(missing)}")
    if allowed is not None:
        allowed_u = [a.upper() for a in allowed]
        if ax not in allowed_u:
            raise InputError(f"{name}={axes!r} is not supported here; expected one of {allowed_u}")
    return ax
