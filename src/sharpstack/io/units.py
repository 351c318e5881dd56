"""Length units: what the files and the user write (``um``, ``µm``, ``nm``, ``micrometer``,
OME's ``PhysicalSize*Unit`` symbols ...) -> micrometres, sharpstack's one unit."""

from __future__ import annotations

import re
from typing import Any

UNIT = "micrometer"
"""The unit of every voxel size sharpstack holds (``attrs["unit"]``)."""

# Length units -> micrometres per unit. Three sources of spellings:
# - OME's UnitsLength enumeration (OME-XML ``PhysicalSize*Unit``): symbols whose case matters
#   ("Mm" is the megametre, "mm" the millimetre; "Pm" petametre, "pm" picometre);
# - UDUNITS-2 names as OME-Zarr (NGFF) axis units ("micrometer", "nanometer", ...);
# - what ImageJ and microscope software write in the ``unit`` field ("um", "micron",
#   "\u00B5m" escaped, "µm" with either micro sign).
# ``pixel`` and ``reference frame`` (OME) are not lengths: a size in them is unknown.
_UM_PER_METRE = 1e6
_LENGTH_SYMBOLS: dict[str, float] = {  # exact case
    "Ym": 1e24 * _UM_PER_METRE, "Zm": 1e21 * _UM_PER_METRE, "Em": 1e18 * _UM_PER_METRE,
    "Pm": 1e15 * _UM_PER_METRE, "Tm": 1e12 * _UM_PER_METRE, "Gm": 1e9 * _UM_PER_METRE,
    "Mm": 1e6 * _UM_PER_METRE, "km": 1e9, "hm": 1e8, "dam": 1e7, "m": 1e6, "dm": 1e5,
    "cm": 1e4, "mm": 1e3, "\u00b5m": 1.0, "\u03bcm": 1.0, "um": 1.0, "nm": 1e-3,
    "pm": 1e-6, "fm": 1e-9, "am": 1e-12, "zm": 1e-15, "ym": 1e-18,
    "\u00c5": 1e-4, "\u212b": 1e-4,
    # OME's non-SI lengths: thou (mil), line (1/12 inch), inch, foot, yard, mile,
    # astronomical unit, light year, parsec, typographic point (1/72 inch)
    "thou": 25.4, "li": 25400.0 / 12, "in": 25400.0, "ft": 304800.0, "yd": 914400.0,
    "mi": 1609344000.0, "ua": 149597870700.0 * _UM_PER_METRE,
    "ly": 9460730472580800.0 * _UM_PER_METRE, "pc": 30856775814913673.0 * _UM_PER_METRE,
    "pt": 25400.0 / 72,
}
# Symbols matched whatever their case ("UM", "Nm"): those whose lower-case form is not
# shared by two OME units (mm/Mm, pm/Pm, zm/Zm, ym/Ym need their exact case).
_lower_counts: dict[str, int] = {}
for _sym in _LENGTH_SYMBOLS:
    _lower_counts[_sym.lower()] = _lower_counts.get(_sym.lower(), 0) + 1
_CASELESS_SYMBOLS = {k.lower(): v for k, v in _LENGTH_SYMBOLS.items()
                     if _lower_counts[k.lower()] == 1}
_SI_PREFIXES = {"yotta": 1e24, "zetta": 1e21, "exa": 1e18, "peta": 1e15, "tera": 1e12,
                "giga": 1e9, "mega": 1e6, "kilo": 1e3, "hecto": 1e2, "deca": 1e1, "deka": 1e1,
                "": 1.0, "deci": 1e-1, "centi": 1e-2, "milli": 1e-3, "micro": 1e-6,
                "nano": 1e-9, "pico": 1e-12, "femto": 1e-15, "atto": 1e-18, "zepto": 1e-21,
                "yocto": 1e-24}
_LENGTH_NAMES: dict[str, float] = {}  # lower case
for _prefix, _power in _SI_PREFIXES.items():
    for _stem in ("meter", "metre"):
        for _plural in ("", "s"):
            _LENGTH_NAMES[f"{_prefix}{_stem}{_plural}"] = _power * _UM_PER_METRE
for _names, _factor in (
    (("micron", "microns"), 1.0),
    (("angstrom", "angstroms", "\u00e5ngstr\u00f6m"), 1e-4),
    (("inch", "inches"), 25400.0), (("foot", "feet"), 304800.0),
    (("yard", "yards"), 914400.0), (("mile", "miles"), 1609344000.0),
    (("parsec", "parsecs"), 30856775814913673.0 * _UM_PER_METRE),
    (("light year", "light years", "lightyear"), 9460730472580800.0 * _UM_PER_METRE),
    (("astronomical unit", "astronomical units"), 149597870700.0 * _UM_PER_METRE),
):
    for _name in _names:
        _LENGTH_NAMES[_name] = _factor
del _lower_counts, _sym, _prefix, _power, _stem, _plural, _names, _factor, _name


_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def unit_factor(unit: Any) -> float | None:
    """Return micrometres per ``unit``, or None when the unit is missing or not a length.

    Understands OME's UnitsLength symbols (case-sensitive where two differ only by case:
    ``mm``/``Mm``), UDUNITS names (``micrometer``, ``nanometre``, plurals), ``micron``, and
    ImageJ's spellings (``um``, ``µm``/``μm`` and the escaped ``\\u00B5m``). ``pixel``,
    ``reference frame``, empty and unknown strings give None.
    """
    if not isinstance(unit, str):
        return None
    text = " ".join(_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), unit).split())
    if text in _LENGTH_SYMBOLS:
        return _LENGTH_SYMBOLS[text]
    lower = text.lower()
    return _CASELESS_SYMBOLS.get(lower, _LENGTH_NAMES.get(lower))
