"""Is the input like the data the model was trained on? (out-of-distribution warning)

A restoration network given data unlike its training data still returns an image: a stack of
pure noise comes back with texture the network learnt to paint. So sharpstack's packages
record a few statistics of the training data, *after the package's own normalisation*
(``scale_range`` percentiles), in a data-only attachment ``training_stats.json``, and
``predict`` computes the same statistics on a sample of the input and warns when they are far
apart:

- the intensity histogram of the normalised values: ``HIST_BINS`` bins over
  ``HIST_RANGE`` plus one underflow and one overflow bin, compared by the Jensen-Shannon
  distance (base 2: 0 identical, 1 disjoint);
- the noise level: a robust estimate of the standard deviation of white noise in the
  normalised values (the median absolute value of Immerkaer's Laplacian difference of each
  yx tile, which structure barely moves), compared by its ratio;
- the shape of the radially averaged power spectrum of the yx tiles (Hann-windowed) in
  ``len(BAND_EDGES) - 1`` half-octave bands, normalised to sum 1, compared by the RMS of the
  log10 ratios band by band about their mean (scale-free: the shape only).

The statistics are computed on yx tiles of ``TILE`` px (fewer when the image is smaller) at
seeded positions in evenly spaced planes, so that a larger-than-memory stack is read only
tile by tile. The file is parsed as JSON and checked number by number; nothing in it
executes, and a package without it predicts as before.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..metrics import laplacian_difference

__all__ = ["STATS_FILE", "FORMAT", "THRESHOLDS", "Distance", "stack_statistics",
           "training_statistics", "input_statistics", "compare", "js_distance",
           "spectrum_distance", "parse_recorded", "read_recorded", "describe",
           "distribution_note"]

STATS_FILE = "training_stats.json"
FORMAT = "sharpstack-training-stats/1"
HIST_RANGE = (-0.5, 1.5)
HIST_BINS = 40
BAND_EDGES = tuple(float(f) for f in np.geomspace(1 / 32, 0.5, 9))
"""Spatial frequencies (cycles per pixel) bounding the spectrum's half-octave bands."""
TILE = 64
PLANES, PER_PLANE = 32, 8
"""An input is measured on at most PLANES evenly spaced planes, PER_PLANE tiles in each (about
1 M voxels); the training data on up to 4x as many of each."""
MAX_BYTES = 1 << 20
"""A recorded statistics file larger than this is not read (ours are about 3 kB)."""

THRESHOLDS = {"histogram": 0.45, "noise_ratio": 3.0, "spectrum": 0.75}
"""Warn when the Jensen-Shannon distance of the histograms exceeds ``histogram``, the noise
levels differ by more than a factor ``noise_ratio`` (either way), or the RMS log10 ratio of
the spectra's bands exceeds ``spectrum`` (about a factor of 5.6 band to band). Measured on real and
synthetic stacks: see the README's "Trust and safety" section."""

# --------------------------------------------------------------------------------------------
# the statistics
# --------------------------------------------------------------------------------------------

def _tiles(shape: Sequence[int], read: Callable[[tuple], np.ndarray], *, planes: int,
           per_plane: int, seed: int) -> Iterator[np.ndarray]:
    """yx tiles of at most ``TILE`` px from ``planes`` evenly spaced planes (all leading axes
    flattened), ``per_plane`` at seeded positions in each; ``read(index)`` returns one."""
    lead, (ny, nx) = tuple(shape[:-2]), tuple(shape[-2:])
    n_planes = int(np.prod(lead)) if lead else 1
    ty, tx = min(TILE, ny), min(TILE, nx)
    rng = np.random.default_rng(seed)
    chosen = np.unique(np.linspace(0, n_planes - 1, min(planes, n_planes)).round().astype(int))
    for p in chosen:
        where = np.unravel_index(int(p), lead) if lead else ()
        for _ in range(per_plane if (ny > ty or nx > tx) else 1):
            y0 = int(rng.integers(0, ny - ty + 1))
            x0 = int(rng.integers(0, nx - tx + 1))
            yield np.asarray(read(tuple(int(i) for i in where)
                                  + (slice(y0, y0 + ty), slice(x0, x0 + tx))),
                             dtype=np.float64)


def _noise(t: np.ndarray) -> float:
    """Immerkaer's estimate, made robust: sigma = 1.4826 * median|L * t| / 6."""
    if min(t.shape) < 3:
        return float("nan")
    return float(1.4826 * np.median(np.abs(laplacian_difference(t))) / 6.0)


def _radial_frequency(ty: int, tx: int) -> np.ndarray:
    fy = np.fft.fftfreq(ty)[:, None]
    fx = np.fft.rfftfreq(tx)[None, :]
    return np.sqrt(fy ** 2 + fx ** 2)


def _band_power(t: np.ndarray) -> np.ndarray:
    """Mean power per band of the Hann-windowed, mean-free tile (NaN for an empty band)."""
    ty, tx = t.shape
    win = np.outer(np.hanning(ty), np.hanning(tx))
    p = np.abs(np.fft.rfft2((t - t.mean()) * win)) ** 2
    f = _radial_frequency(ty, tx)
    out = np.full(len(BAND_EDGES) - 1, np.nan)
    for b, (lo, hi) in enumerate(zip(BAND_EDGES[:-1], BAND_EDGES[1:])):
        sel = (f >= lo) & (f < hi) if b < len(BAND_EDGES) - 2 else (f >= lo) & (f <= hi)
        if sel.any():
            out[b] = p[sel].mean()
    return out


def stack_statistics(shape: Sequence[int], read: Callable[[tuple], np.ndarray], lo: float,
                     hi: float, eps: float = 1e-6, *, planes: int = 24, per_plane: int = 4,
                     seed: int = 0) -> dict[str, Any]:
    """The statistics of a stack of shape ``(..., Y, X)`` normalised as ``scale_range`` does
    (``(x - lo) / (hi - lo + eps)``), from tiles read by ``read(index)`` (ints for the leading
    axes, then the y and x slices): nothing larger than one tile is read at once.

    Returns ``{"histogram": [HIST_BINS + 2 probabilities: under, bins, over], "quantiles":
    {"5", "50", "95"}, "noise": float, "spectrum": [bands, sum 1], "tiles": int}``.
    """
    scale = 1.0 / (float(hi) - float(lo) + float(eps))
    edges = np.linspace(HIST_RANGE[0], HIST_RANGE[1], HIST_BINS + 1)
    counts = np.zeros(HIST_BINS + 2)
    noises, powers, n = [], [], 0
    for raw in _tiles(shape, read, planes=planes, per_plane=per_plane, seed=seed):
        t = (raw - float(lo)) * scale
        counts[0] += np.count_nonzero(t < edges[0])
        counts[-1] += np.count_nonzero(t > edges[-1])
        counts[1:-1] += np.histogram(t, bins=edges)[0]
        noises.append(_noise(t))
        powers.append(_band_power(t))
        n += 1
    if n == 0:
        raise ValueError("no tiles to measure: the stack is empty")
    hist = counts / counts.sum()
    with np.errstate(all="ignore"):
        band = np.nanmean(np.array(powers), axis=0)
    spectrum = band / np.nansum(band) if np.nansum(band) > 0 else np.full_like(band, np.nan)
    return {"histogram": [round(float(v), 7) for v in hist],
            "quantiles": {q: round(_hist_quantile(hist, float(q) / 100), 4)
                          for q in ("5", "50", "95")},
            "noise": float(np.nanmedian(noises)) if np.isfinite(noises).any() else float("nan"),
            "spectrum": [None if not np.isfinite(v) else float(v) for v in spectrum],
            "tiles": n}


def _hist_quantile(hist: np.ndarray, q: float) -> float:
    """A quantile of the normalised values from the histogram (linear within a bin; the
    under/overflow bins read as the range's ends)."""
    cdf = np.cumsum(hist)
    i = int(np.searchsorted(cdf, q))
    if i == 0:
        return HIST_RANGE[0]
    if i >= len(hist) - 1:
        return HIST_RANGE[1]
    width = (HIST_RANGE[1] - HIST_RANGE[0]) / HIST_BINS
    below = cdf[i - 1]
    frac = (q - below) / hist[i] if hist[i] > 0 else 0.5
    return float(HIST_RANGE[0] + (i - 1 + frac) * width)


def training_statistics(data: np.ndarray, pmin: float, pmax: float, eps: float = 1e-6, *,
                        source: str = "", retrain: str = "") -> dict[str, Any]:
    """The content of ``training_stats.json`` for ``data`` (in memory, ``(..., Y, X)``, raw:
    normalised here with its own ``pmin``/``pmax`` percentiles as the package's
    ``scale_range`` will normalise an input). ``source`` says what was measured;
    ``retrain`` is the command line the warning suggests (plain text)."""
    x = np.asarray(data, dtype=np.float32)
    if x.ndim < 2:
        raise ValueError(f"training statistics need an image (..., Y, X), got shape {x.shape}")
    lo, hi = (float(v) for v in np.percentile(x, [pmin, pmax]))
    stats = stack_statistics(x.shape, lambda index: x[index], lo, hi, eps, planes=4 * PLANES,
                             per_plane=4 * PER_PLANE)
    return {"format": FORMAT, "pmin": float(pmin), "pmax": float(pmax),
            "histogram_range": list(HIST_RANGE), "histogram_bins": HIST_BINS,
            "spectrum_band_edges": [round(f, 6) for f in BAND_EDGES], "tile": TILE,
            "source": source, "retrain": retrain, **stats}


# --------------------------------------------------------------------------------------------
# the comparison
# --------------------------------------------------------------------------------------------

@dataclass
class Distance:
    """How far an input's statistics are from the training data's."""

    histogram: float
    """Jensen-Shannon distance of the normalised-intensity histograms (0..1)."""
    noise_ratio: float
    """The input's noise level / the training data's."""
    spectrum: float
    """RMS over bands of log10(input / training) of the normalised band powers."""

    def far(self, thresholds: Mapping[str, float] = THRESHOLDS) -> list[str]:
        """The names of the measures beyond their threshold."""
        out = []
        if self.histogram > thresholds["histogram"]:
            out.append("histogram")
        r = self.noise_ratio
        if math.isfinite(r) and (r > thresholds["noise_ratio"] or r < 1 / thresholds["noise_ratio"]):
            out.append("noise")
        if self.spectrum > thresholds["spectrum"]:
            out.append("spectrum")
        return out


def js_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon distance (base 2) of two histograms (normalised here)."""
    a, b = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(u: np.ndarray) -> float:
        s = u > 0
        return float(np.sum(u[s] * np.log2(u[s] / m[s])))

    return math.sqrt(max(0.0, (kl(a) + kl(b)) / 2))


def spectrum_distance(p: Sequence[float | None], q: Sequence[float | None]) -> float:
    """RMS of log10(p / q) over the bands both have, less its mean (the shape only: the
    standard deviation of the log ratios; 1 means a factor of 10 band to band)."""
    a = np.array([np.nan if v is None else v for v in p], dtype=np.float64)
    b = np.array([np.nan if v is None else v for v in q], dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    if not ok.any():
        return float("nan")
    r = np.log10(a[ok]) - np.log10(b[ok])
    return float(np.sqrt(np.mean((r - r.mean()) ** 2)))


def compare(recorded: Mapping[str, Any], measured: Mapping[str, Any]) -> Distance:
    """The :class:`Distance` of ``measured`` (the input's :func:`stack_statistics`) from
    ``recorded`` (a package's training statistics)."""
    floor = 1e-4  # quantised data can have a noise estimate of 0
    r = max(float(measured["noise"]), floor) / max(float(recorded["noise"]), floor)
    return Distance(histogram=js_distance(measured["histogram"], recorded["histogram"]),
                    noise_ratio=r if math.isfinite(r) else float("nan"),
                    spectrum=spectrum_distance(measured["spectrum"], recorded["spectrum"]))


# --------------------------------------------------------------------------------------------
# a package's recorded statistics, and the input's
# --------------------------------------------------------------------------------------------

def _number(v: Any, what: str, *, low: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < low:
        raise ValueError(f"{what} is not a finite number >= {low:g}")
    return float(v)


def _plain_text(v: Any, limit: int = 200) -> str:
    """Printable ASCII only (the text comes from someone's package and goes to a terminal)."""
    s = v if isinstance(v, str) else ""
    return "".join(ch for ch in s if 32 <= ord(ch) < 127)[:limit]


def parse_recorded(data: bytes) -> dict[str, Any]:
    """``training_stats.json`` parsed and checked field by field (``ValueError`` names the
    first problem); only the fields the comparison reads are returned."""
    if len(data) > MAX_BYTES:
        raise ValueError(f"it is larger than {MAX_BYTES} bytes")
    obj = json.loads(data.decode("utf-8"))
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"it is not a {FORMAT!r} file")
    if (obj.get("histogram_range") != list(HIST_RANGE) or obj.get("histogram_bins") != HIST_BINS
            or not isinstance(obj.get("spectrum_band_edges"), list)
            or len(obj["spectrum_band_edges"]) != len(BAND_EDGES)):
        raise ValueError("it was measured with other bins than this sharpstack version's")
    hist = obj.get("histogram")
    if not isinstance(hist, list) or len(hist) != HIST_BINS + 2:
        raise ValueError(f"its histogram is not a list of {HIST_BINS + 2} numbers")
    hist = [_number(v, "a histogram value") for v in hist]
    if sum(hist) <= 0:
        raise ValueError("its histogram is empty")
    spec = obj.get("spectrum")
    if not isinstance(spec, list) or len(spec) != len(BAND_EDGES) - 1:
        raise ValueError(f"its spectrum is not a list of {len(BAND_EDGES) - 1} numbers")
    spec = [None if v is None else _number(v, "a spectrum value") for v in spec]
    q = obj.get("quantiles") if isinstance(obj.get("quantiles"), dict) else {}
    return {"histogram": hist, "spectrum": spec,
            "noise": _number(obj.get("noise"), "the noise level"),
            "pmin": _number(obj.get("pmin"), "pmin"), "pmax": _number(obj.get("pmax"), "pmax"),
            "quantiles": {k: _number(q[k], "a quantile", low=-math.inf)
                          for k in ("5", "50", "95") if k in q},
            "retrain": _plain_text(obj.get("retrain"))}


def read_recorded(descr: Any) -> tuple[dict[str, Any] | None, str | None]:
    """A package's training statistics: ``(stats, None)``; ``(None, None)`` when it records
    none; ``(None, why)`` when its file cannot be used."""
    for a in getattr(descr, "attachments", None) or ():
        name = str(getattr(a, "source", "")).replace("\\", "/").rsplit("/", 1)[-1]
        if name != STATS_FILE:
            continue
        try:
            return parse_recorded(a.get_reader().read()), None
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            return None, f"its {STATS_FILE} cannot be used ({exc})"
    return None, None


def _scale_range(stats: Mapping[Any, Any] | None, pmin: float, pmax: float
                 ) -> tuple[float, float] | None:
    """The whole-stack percentiles ``pmin``/``pmax`` among the exact statistics predict
    computed for the package's ``scale_range`` (one value each), if there."""
    found: dict[float, float] = {}
    for m, v in (stats or {}).items():
        if getattr(m, "name", None) == "quantile" and np.size(v) == 1:
            found[round(100 * float(m.q), 6)] = float(np.asarray(v).ravel()[0])
    lo, hi = found.get(round(pmin, 6)), found.get(round(pmax, 6))
    return None if lo is None or hi is None else (lo, hi)


def input_statistics(data: Any, recorded: Mapping[str, Any],
                     stats: Mapping[Any, Any] | None = None) -> dict[str, Any]:
    """The statistics of ``data`` (an xarray.DataArray with ``y`` and ``x`` dims; numpy-,
    dask- or zarr-backed, read tile by tile) normalised with the recorded percentiles: the
    exact whole-stack values from ``stats`` when predict has them, else those of the tiles."""
    arr = data.transpose(..., "y", "x").data

    def read(index: tuple) -> np.ndarray:
        part = arr[index]
        if hasattr(part, "compute"):
            part = part.compute(scheduler="synchronous")
        return np.asarray(part)

    shape = tuple(int(n) for n in arr.shape)
    lohi = _scale_range(stats, recorded["pmin"], recorded["pmax"])
    if lohi is None:
        values = np.concatenate([t.ravel() for t in _tiles(shape, read, planes=PLANES,
                                                           per_plane=PER_PLANE, seed=0)])
        lohi = tuple(float(v) for v in np.percentile(values, [recorded["pmin"],
                                                              recorded["pmax"]]))
    return stack_statistics(shape, read, lohi[0], lohi[1], planes=PLANES, per_plane=PER_PLANE)


def describe(d: Distance, recorded: Mapping[str, Any], measured: Mapping[str, Any],
             far: Sequence[str], thresholds: Mapping[str, float] = THRESHOLDS) -> str:
    """The warning's text: what differs, with numbers, and what to do."""
    parts = []
    if "noise" in far:
        parts.append(f"its noise level is {d.noise_ratio:.2g}x the training data's "
                     f"({measured['noise']:.3g} vs {recorded['noise']:.3g} in normalised "
                     f"units; warns beyond {thresholds['noise_ratio']:g}x either way)")
    if "histogram" in far:
        qm, qr = measured.get("quantiles", {}), recorded.get("quantiles", {})
        also = "; ".join(f"{k}th percentile {qm[k]:.2f} vs {qr[k]:.2f}"
                         for k in ("50", "95") if k in qm and k in qr)
        parts.append(f"its intensity histogram after normalisation differs (Jensen-Shannon "
                     f"distance {d.histogram:.2f}, warns above {thresholds['histogram']:g}"
                     + (f"; {also}" if also else "") + ")")
    if "spectrum" in far:
        a = np.array([np.nan if v is None else v for v in measured["spectrum"]], dtype=float)
        b = np.array([np.nan if v is None else v for v in recorded["spectrum"]], dtype=float)
        half = len(a) // 2
        with np.errstate(all="ignore"):
            fine = np.nanmean(np.log10(a[half:] / b[half:])) - np.nanmean(
                np.log10(a[:half] / b[:half]))
        where = ("more power at fine scales (noise or texture)" if fine > 0 else
                 "less power at fine scales (smoother)")
        parts.append(f"its power spectrum has another shape: {where}, RMS log10 ratio "
                     f"{d.spectrum:.2f} over the bands (warns above {thresholds['spectrum']:g})")
    retrain = recorded.get("retrain") or "sharpstack train METHOD YOUR_STACKS NEW_RUN/"
    return ("the input does not look like the data this model was trained on: "
            + "; ".join(parts) + ". The model may invent structure that is not there: check "
            f"the output, or train on data like this stack (`{retrain}`). "
            "--no-distribution-check skips this check")


def distribution_note(descr: Any, data: Any, stats: Mapping[Any, Any] | None = None, *,
                      log: Callable[[str], Any] | None = None) -> str | None:
    """The out-of-distribution warning for ``data`` (an xarray.DataArray) and the package
    ``descr``, or None when the input is like the training data or the package records no
    statistics (``log`` gets one line saying so, and the distances when measured)."""
    recorded, problem = read_recorded(descr)
    if recorded is None:
        if log is not None:
            log(f"the package {problem}: the input is not compared with the training data"
                if problem else "the package records no training statistics: the input is not "
                "compared with the training data")
        return None
    measured = input_statistics(data, recorded, stats)
    d = compare(recorded, measured)
    if log is not None:
        log(f"input vs training data (after normalisation): histogram Jensen-Shannon distance "
            f"{d.histogram:.2f}, noise level ratio {d.noise_ratio:.2g}, spectrum RMS log10 "
            f"ratio {d.spectrum:.2f}")
    far = d.far()
    return describe(d, recorded, measured, far) if far else None
