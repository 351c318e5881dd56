"""Synthetic ground truth shared by several methods: nuclei, membranes, both, defocus fields.

Weigert et al. (2017) evaluate IsoNet on 512^3 volumes of about 1500 nuclei, of a packed
epithelium (cell membranes), and of both, "created in-silico by combining plausible
structure distributions, perlin-noise based textures and realistic camera noise". The
generators here make the noise-free fluorophore densities ``f``; blur and camera noise are
added by :mod:`sharpstack.degrade`. :func:`nuclei` and :func:`membranes` are the phantoms
of the IsoNet and DQLR protocols (and of the benchmarks' segmentation scores);
:func:`nuclei_membranes` is IsoNet's third volume and the specimen of
:func:`defocus_fields`, the 2D in-focus fields of the disentangled deblurring defocus series
and of ZSE-GAN's synthetic z-scans. What only one method images lies in its own folder
(``methods/disentangled/defocus.py``, ``methods/zsegan/phantom.py``).

Every function returns a ``float32`` array with axes ``"ZYX"`` on an isotropic voxel grid
(sizes in voxels), values in ``[0, 1]``, and is reproducible for a given ``seed``. Any shape
works, e.g. ``(64, 128, 128)``. The checks :func:`check_shape` and :func:`check_positive`
serve those method-own generators as well; they are not part of ``__all__``.

Texture is value noise with smoothstep interpolation summed over octaves (a cheap
Perlin-like noise): octave ``j`` has lattice spacing ``scales[j]`` voxels and amplitude
``0.5 ** j``; the sum is divided by the sum of amplitudes, so it lies in ``[0, 1]``.

Examples
--------
>>> img, lab = nuclei((32, 64, 64), density=2e-4, radius=(4, 6), seed=1, return_labels=True)
>>> img.shape, img.dtype, int(lab.max()) == round(2e-4 * 32 * 64 * 64)
((32, 64, 64), dtype('float32'), True)
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .errors import InputError

__all__ = ["nuclei", "membranes", "nuclei_membranes", "defocus_fields"]


# ----------------------------------------------------------------------------- checks
def check_shape(shape) -> tuple[int, int, int]:
    try:
        shp = tuple(int(s) for s in shape)
    except TypeError:
        raise InputError(f"shape must be a tuple of three ints (Z, Y, X), got {shape!r}") from None
    if len(shp) != 3 or any(s < 1 for s in shp):
        raise InputError(f"shape must be three positive sizes (Z, Y, X), got {shape!r}")
    return shp  # type: ignore[return-value]


def _check_range(value, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(
            f"{name} must be a pair (min, max) of voxel sizes, got {value!r}") from None
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise InputError(f"{name}={value!r} must satisfy 0 < min <= max (in voxels)")
    return lo, hi


def check_positive(value, name: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"{name} must be a finite number > 0, got {value!r}")
    return v


# ----------------------------------------------------------------------------- texture
def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def _value_noise(shape: tuple[int, ...], scale: float, rng: np.random.Generator) -> np.ndarray:
    """One octave of value noise in [0, 1]: random lattice (spacing ``scale``), smoothstep
    interpolation axis by axis, random lattice offset."""
    coarse_shape = []
    coords = []
    for n in shape:
        off = rng.uniform(0, scale)
        t = (np.arange(n) + off) / scale
        i0 = np.floor(t).astype(np.intp)
        coords.append((i0, _smoothstep(t - i0).astype(np.float32)))
        coarse_shape.append(int(i0.max()) + 2)
    a = rng.random(coarse_shape, dtype=np.float32)
    for ax, (i0, w) in enumerate(coords):
        wshape = [1] * len(shape)
        wshape[ax] = len(w)
        w = w.reshape(wshape)
        lo = np.take(a, i0, axis=ax)
        hi = np.take(a, i0 + 1, axis=ax)
        lo *= 1 - w
        hi *= w
        lo += hi
        a = lo
    return a


def _fractal_noise(shape: tuple[int, ...], scales: tuple[float, ...],
                   rng: np.random.Generator) -> np.ndarray:
    """Multi-octave value noise in [0, 1] (amplitude halves from one scale to the next)."""
    out = np.zeros(shape, dtype=np.float32)
    total = 0.0
    for j, s in enumerate(scales):
        amp = 0.5 ** j
        out += np.float32(amp) * _value_noise(shape, s, rng)
        total += amp
    out /= np.float32(total)
    return out


# ----------------------------------------------------------------------------- geometry
def _random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3, 3)`` uniformly distributed rotation matrices (unit quaternions)."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)


def _random_sequential_adsorption(n: int, low: np.ndarray, high: np.ndarray, radii: np.ndarray,
                                  gap: float, rng: np.random.Generator,
                                  max_tries: int) -> tuple[np.ndarray, np.ndarray]:
    """Place up to ``n`` non-overlapping spheres (radius ``radii[i]``, distance between
    centres >= r_i + r_j + gap) uniformly in the box [low, high). Candidates are tried in
    order; a spatial hash keeps each test local. Returns (centres (m, 3), radii (m,))."""
    cell = 2 * float(radii.max()) + gap
    grid: dict[tuple[int, int, int], list[int]] = {}
    centres: list[np.ndarray] = []
    rads: list[float] = []
    tries = 0
    k = 0
    batch = max(64, n)
    while len(centres) < n and tries < max_tries:
        cand = rng.uniform(low, high, size=(batch, 3))
        for c in cand:
            if len(centres) >= n or tries >= max_tries:
                break
            tries += 1
            r = float(radii[k % len(radii)])
            key = (int(c[0] // cell), int(c[1] // cell), int(c[2] // cell))
            ok = True
            for dz in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        for j in grid.get((key[0] + dz, key[1] + dy, key[2] + dx), ()):
                            d = centres[j] - c
                            lim = r + rads[j] + gap
                            if d[0] * d[0] + d[1] * d[1] + d[2] * d[2] < lim * lim:
                                ok = False
                                break
                        if not ok:
                            break
                    if not ok:
                        break
                if not ok:
                    break
            if ok:
                grid.setdefault(key, []).append(len(centres))
                centres.append(c)
                rads.append(r)
                k += 1
    return np.asarray(centres, dtype=np.float64).reshape(-1, 3), np.asarray(rads, dtype=np.float64)


def _render_ellipsoids(image: np.ndarray, labels: np.ndarray | None, centres: np.ndarray,
                       semi_axes: np.ndarray, rotations: np.ndarray, values: np.ndarray,
                       texture: np.ndarray | None, first_label: int = 1) -> None:
    """Draw solid ellipsoids into ``image`` (value * texture) and ``labels`` (in place).

    Ellipsoid ``i`` is the set of voxel centres ``p`` with
    ``sum_k ((R_i^T (p - c_i))_k / a_ik)^2 <= 1`` (columns of ``R_i`` are its principal axes).
    """
    shape = image.shape
    for i, (c, a, rot, val) in enumerate(zip(centres, semi_axes, rotations, values)):
        ext = np.sqrt(((rot * a[None, :]) ** 2).sum(axis=1))  # half-extent along z, y, x
        lo = np.maximum(np.floor(c - ext).astype(int), 0)
        hi = np.minimum(np.ceil(c + ext).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        dz = (np.arange(lo[0], hi[0]) - c[0])[:, None, None]
        dy = (np.arange(lo[1], hi[1]) - c[1])[None, :, None]
        dx = (np.arange(lo[2], hi[2]) - c[2])[None, None, :]
        q = 0.0
        for k in range(3):
            u = rot[0, k] * dz + rot[1, k] * dy + rot[2, k] * dx
            q = q + (u / a[k]) ** 2
        mask = q <= 1.0
        if not mask.any():
            continue
        box = tuple(slice(l, h) for l, h in zip(lo, hi))
        sub = image[box]
        if texture is None:
            sub[mask] = val
        else:
            sub[mask] = val * texture[box][mask]
        if labels is not None:
            labels[box][mask] = first_label + i


def _ellipsoid_axes(n: int, radius: tuple[float, float], rng: np.random.Generator,
                    aspect: tuple[float, float] = (0.7, 1.0)) -> np.ndarray:
    """Semi-axes ``(n, 3)``: the longest drawn uniformly in ``radius``, the other two that
    times a factor uniform in ``aspect``."""
    r = rng.uniform(radius[0], radius[1], size=n)
    f = rng.uniform(aspect[0], aspect[1], size=(n, 2))
    return np.column_stack([r, r * f[:, 0], r * f[:, 1]])


def _texture_factor(shape, scales, amount: float, rng) -> np.ndarray:
    """``1 - amount + amount * noise``: a multiplicative texture in ``[1 - amount, 1]``."""
    t = _fractal_noise(shape, scales, rng)
    t *= np.float32(amount)
    t += np.float32(1.0 - amount)
    return t


def _sequential_labels(lab: np.ndarray) -> np.ndarray:
    present = np.unique(lab)
    present = present[present > 0]
    lut = np.zeros(int(lab.max()) + 1, dtype=np.int32)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lut[lab]


# ----------------------------------------------------------------------------- Voronoi cells
def _voronoi_boundary(shape: tuple[int, int, int], seeds: np.ndarray, block: int = 4,
                      k: int = 8, tile_rows: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Nearest seed and distance to the nearest Voronoi face for every voxel.

    Returns ``(nearest (Z, Y, X) int32, dist (Z, Y, X) float32)`` where ``dist`` is the
    distance from the voxel centre to the bisector plane of its two nearest seeds,
    ``(d2^2 - d1^2) / (2 |s2 - s1|)``: exactly the distance to the nearest cell face except
    within a few voxels of cell edges, where it can be slightly larger; it is 0 on every
    face, so membranes drawn from it have no holes.

    Fast path: for every block of ``block^3`` voxels the ``k`` seeds nearest to the block
    centre are the candidates. Where they cannot be guaranteed to contain the two nearest
    seeds of every voxel of the block (the k-th candidate is closer to the centre than
    ``d2 + 2 * half-diagonal``), the block's voxels are queried exactly in a k-d tree. The work
    is done in tiles of ``block`` planes by ``tile_rows`` rows to stay in cache.
    """
    from scipy.spatial import cKDTree

    nz, ny, nx = shape
    tree = cKDTree(seeds)
    k = int(min(k, len(seeds)))
    tile_rows = max(block, tile_rows // block * block)
    nbx = -(-nx // block)
    half_diag = block * math.sqrt(3) / 2
    nearest = np.empty(shape, dtype=np.int32)
    dist = np.empty(shape, dtype=np.float32)
    seeds32 = seeds.astype(np.float32)
    xx = np.arange(nx, dtype=np.float32)[None, :]
    bxc = np.arange(nbx) * block + (block - 1) / 2
    for z0 in range(0, nz, block):
        z1 = min(z0 + block, nz)
        zz = np.arange(z0, z1, dtype=np.float32)[:, None, None]
        for y0 in range(0, ny, tile_rows):
            y1 = min(y0 + tile_rows, ny)
            nby = -(-(y1 - y0) // block)
            byc = y0 + np.arange(nby) * block + (block - 1) / 2
            by, bx = np.meshgrid(byc, bxc, indexing="ij")
            cz = np.full(by.size, z0 + (block - 1) / 2)
            centres = np.column_stack([cz, by.ravel(), bx.ravel()])
            dc, ic = tree.query(centres, k=k)
            dc = dc.reshape(nby, nbx, k)
            ic = ic.reshape(nby, nbx, k)
            tshape = (z1 - z0, y1 - y0, nx)
            yy = np.arange(y0, y1, dtype=np.float32)[:, None]
            d1 = np.full(tshape, np.inf, dtype=np.float32)
            d2 = np.full(tshape, np.inf, dtype=np.float32)
            i1 = np.zeros(tshape, dtype=np.int32)
            i2 = np.zeros(tshape, dtype=np.int32)
            c1 = np.empty(tshape, dtype=bool)
            c2 = np.empty(tshape, dtype=bool)
            d = np.empty(tshape, dtype=np.float32)
            tmp = np.empty(tshape, dtype=np.float32)
            for j in range(k):
                idx = np.repeat(np.repeat(ic[..., j], block, 0), block, 1)[:y1 - y0, :nx]
                s = seeds32[idx]
                dyx = (yy - s[..., 1]) ** 2 + (xx - s[..., 2]) ** 2
                np.subtract(zz, s[None, ..., 0], out=d)
                np.square(d, out=d)
                d += dyx[None]
                np.less(d, d1, out=c1)
                np.less(d, d2, out=c2)
                np.maximum(d1, d, out=tmp)
                np.minimum(d2, tmp, out=d2)
                np.copyto(i2, idx[None], where=c2)
                np.copyto(i2, i1, where=c1)
                np.copyto(d1, d, where=c1)
                np.copyto(i1, idx[None], where=c1)
            if k < len(seeds):
                bad = dc[..., -1] < dc[..., 1] + 2 * half_diag
                if bad.any():
                    vmask = np.repeat(np.repeat(bad, block, 0), block, 1)[:y1 - y0, :nx]
                    vmask = np.broadcast_to(vmask, tshape)
                    pts = np.argwhere(vmask).astype(np.float64)
                    pts[:, 0] += z0
                    pts[:, 1] += y0
                    dd, ii = tree.query(pts, k=2)  # here len(seeds) > k >= 2
                    d1[vmask] = dd[:, 0] ** 2
                    i1[vmask] = ii[:, 0]
                    d2[vmask] = dd[:, 1] ** 2
                    i2[vmask] = ii[:, 1]
            diff = seeds32[i2] - seeds32[i1]
            sep = np.sqrt(np.einsum("...i,...i->...", diff, diff))
            with np.errstate(invalid="ignore", divide="ignore"):
                dface = (d2 - d1) / (2 * sep)
            dface[~np.isfinite(dface)] = np.inf
            nearest[z0:z1, y0:y1] = i1
            dist[z0:z1, y0:y1] = dface
    return nearest, dist


def _cell_seeds(shape: tuple[int, int, int], cell_diameter: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres for a packed epithelium: RSA with minimum distance 0.6 * diameter in the
    volume grown by one diameter on every side (so border cells are cut, not shrunk). Mean
    cell volume is that of a sphere of ``cell_diameter``. Returns (seeds, low corner)."""
    margin = cell_diameter
    low = -np.full(3, margin)
    high = np.asarray(shape, dtype=np.float64) - 1 + margin
    vol = float(np.prod(high - low))
    n = max(1, int(round(vol / (math.pi / 6 * cell_diameter ** 3))))
    rmin = 0.3 * cell_diameter
    seeds, _ = _random_sequential_adsorption(n, low, high, np.array([rmin]), 0.0, rng,
                                             max_tries=50 * n + 1000)
    return seeds, low


def _membrane_image(shape, seeds, thickness: float, texture: bool,
                    rng) -> tuple[np.ndarray, np.ndarray]:
    nearest, dist = _voronoi_boundary(shape, seeds)
    sigma = thickness / (2 * math.sqrt(2 * math.log(2)))
    img = np.exp(np.float32(-0.5 / sigma ** 2) * dist * dist)
    if texture:
        img *= _texture_factor(shape, (16.0, 8.0, 4.0), 0.5, rng)
    return img.astype(np.float32, copy=False), nearest


# ----------------------------------------------------------------------------- public API
def nuclei(shape: tuple[int, int, int], *, density: float = 1500 / 512 ** 3,
           radius: tuple[float, float] = (9.0, 14.0), seed: int = 0, texture: bool = True,
           return_labels: bool = False):
    """Randomly placed, randomly oriented ellipsoidal nuclei with chromatin-like texture.

    ``round(density * Z * Y * X)`` nuclei (about 1500 in 512^3 by default) are placed by
    random sequential adsorption: centres uniform in the volume, bounding spheres (radius =
    longest semi-axis) at least one voxel apart, so nuclei never overlap and each label is an
    exact mask of its nucleus. Nuclei may be cut by the volume border.

    Parameters
    ----------
    shape : tuple of 3 ints
        ``(Z, Y, X)`` in voxels.
    density : float
        Nuclei per voxel. Default ``1500 / 512**3``.
    radius : (float, float)
        Range of the longest semi-axis in voxels (uniform); the two shorter semi-axes are
        0.7-1.0 times the longest.
    seed : int
        Random seed (placement, sizes, orientations, brightness, texture).
    texture : bool
        Multiply each nucleus by ``0.4 + 0.6 * noise`` (noise: octaves at 8, 4, 2 voxels);
        otherwise each nucleus is flat.
    return_labels : bool
        Also return the label image.

    Returns
    -------
    image : np.ndarray
        ``float32`` ``(Z, Y, X)`` in ``[0, 1]``; background 0, each nucleus has a brightness
        uniform in ``[0.6, 1]`` times its texture.
    labels : np.ndarray, optional
        ``int32`` ``(Z, Y, X)``, 0 = background, ``1..N`` one per nucleus (``image > 0``
        exactly where ``labels > 0``).

    Notes
    -----
    If the density is too high to place all nuclei without overlap, fewer are placed and a
    ``UserWarning`` says how many.
    """
    shp = check_shape(shape)
    dens = check_positive(density, "density")
    rad = _check_range(radius, "radius")
    rng = np.random.default_rng(seed)
    n = int(round(dens * float(np.prod(shp))))
    axes = _ellipsoid_axes(max(n, 1), rad, rng)[:n]
    low = np.zeros(3)
    high = np.asarray(shp, dtype=np.float64) - 1
    centres, _ = _random_sequential_adsorption(n, low, high, axes[:, 0] if n else np.ones(1), 1.0,
                                               rng, max_tries=100 * n + 1000)
    m = len(centres)
    if m < n:
        warnings.warn(f"nuclei: placed only {m} of {n} nuclei without overlap; lower density "
                      f"or radius", UserWarning, stacklevel=2)
    axes = axes[:m]
    rots = _random_rotations(m, rng)
    values = rng.uniform(0.6, 1.0, size=m)
    tex = _texture_factor(shp, (8.0, 4.0, 2.0), 0.6, rng) if texture else None
    img = np.zeros(shp, dtype=np.float32)
    lab = np.zeros(shp, dtype=np.int32) if return_labels else None
    _render_ellipsoids(img, lab, centres, axes, rots, values, tex)
    np.clip(img, 0.0, 1.0, out=img)
    if return_labels:
        return img, lab
    return img


def membranes(shape: tuple[int, int, int], *, cell_diameter: float = 32.0, thickness: float = 2.0,
              seed: int = 0, texture: bool = True, return_labels: bool = False):
    """Packed epithelium: bright, thin membrane sheets on the faces of Voronoi cells.

    Cell centres are placed by random sequential adsorption (minimum distance
    0.6 * ``cell_diameter``) in the volume grown by one cell diameter on every side; each
    voxel's intensity is a Gaussian of its exact distance ``d`` to the nearest cell face
    (bisector plane of its two nearest centres), ``exp(-d^2 / (2 s^2))`` with FWHM
    ``thickness``, times the texture. Every cell is closed by its membrane.

    Parameters
    ----------
    shape : tuple of 3 ints
        ``(Z, Y, X)`` in voxels.
    cell_diameter : float
        Mean cell size in voxels: diameter of a sphere of the mean cell volume.
    thickness : float
        Membrane full width at half maximum in voxels.
    seed : int
        Random seed.
    texture : bool
        Multiply by ``0.5 + 0.5 * noise`` (octaves at 16, 8, 4 voxels).
    return_labels : bool
        Also return the cell label image.

    Returns
    -------
    image : np.ndarray
        ``float32`` ``(Z, Y, X)`` in ``[0, 1]``: on the faces the texture value (0.5-1; 1
        without texture), falling to 0 inside the cells.
    labels : np.ndarray, optional
        ``int32`` ``(Z, Y, X)`` cell index ``1..N`` of every voxel (nearest centre), numbered
        consecutively over the cells present in the volume.
    """
    shp = check_shape(shape)
    diam = check_positive(cell_diameter, "cell_diameter")
    thick = check_positive(thickness, "thickness")
    rng = np.random.default_rng(seed)
    seeds, _ = _cell_seeds(shp, diam, rng)
    img, nearest = _membrane_image(shp, seeds, thick, texture, rng)
    np.clip(img, 0.0, 1.0, out=img)
    if return_labels:
        return img, _sequential_labels(nearest + 1)
    return img


def nuclei_membranes(shape: tuple[int, int, int], seed: int = 0, *, cell_diameter: float = 32.0,
                     thickness: float = 2.0, nucleus_radius: tuple[float, float] | None = None,
                     membrane_intensity: float = 1.0, texture: bool = True,
                     return_labels: bool = False):
    """Packed epithelium with one nucleus inside every cell (the paper's third volume).

    Membranes as in :func:`membranes`; each cell centre carries a randomly oriented
    ellipsoidal nucleus (as in :func:`nuclei`) whose longest semi-axis is drawn in
    ``nucleus_radius`` but capped at half the distance to the nearest other centre minus
    ``thickness + 1`` voxels, so every nucleus lies inside its own cell and clear of the
    membrane; a cell too crowded for a nucleus with all semi-axes >= 2 voxels gets none. The
    image is the voxel-wise maximum of both.

    Parameters
    ----------
    shape : tuple of 3 ints
        ``(Z, Y, X)`` in voxels.
    seed : int
        Random seed.
    cell_diameter : float
        Mean cell size in voxels (see :func:`membranes`).
    thickness : float
        Membrane FWHM in voxels.
    nucleus_radius : (float, float), optional
        Range of the longest nuclear semi-axis in voxels; default
        ``(0.2, 0.28) * cell_diameter``.
    membrane_intensity : float
        Peak membrane brightness in ``(0, 1]`` (nuclei have 0.6-1 times their texture).
    texture : bool
        Textured nuclei and membranes (see :func:`nuclei` and :func:`membranes`).
    return_labels : bool
        Also return the nuclei label image (``int32``, 0 = background, ``1..N``).

    Returns
    -------
    image : np.ndarray
        ``float32`` ``(Z, Y, X)`` in ``[0, 1]``.
    labels : np.ndarray, optional
        Nuclei labels, exact masks, numbered consecutively over nuclei present in the volume.
    """
    shp = check_shape(shape)
    diam = check_positive(cell_diameter, "cell_diameter")
    thick = check_positive(thickness, "thickness")
    mi = check_positive(membrane_intensity, "membrane_intensity")
    if mi > 1:
        raise InputError(f"membrane_intensity must be in (0, 1], got {membrane_intensity!r}")
    rad = _check_range(nucleus_radius if nucleus_radius is not None
                       else (0.2 * diam, 0.28 * diam), "nucleus_radius")
    rng = np.random.default_rng(seed)
    seeds, _ = _cell_seeds(shp, diam, rng)
    img, _ = _membrane_image(shp, seeds, thick, texture, rng)
    img *= np.float32(mi)
    from scipy.spatial import cKDTree

    if len(seeds) > 1:
        nn = cKDTree(seeds).query(seeds, k=2)[0][:, 1]
    else:
        nn = np.full(len(seeds), np.inf)
    cap = 0.5 * nn - thick - 1.0
    axes = _ellipsoid_axes(len(seeds), rad, rng)
    shrink = np.clip(cap / axes[:, 0], 0.0, 1.0)
    axes *= shrink[:, None]
    keep = axes[:, 2] >= 2.0  # cells too crowded for a visible nucleus get none
    rots = _random_rotations(len(seeds), rng)
    values = rng.uniform(0.6, 1.0, size=len(seeds))
    tex = _texture_factor(shp, (8.0, 4.0, 2.0), 0.6, rng) if texture else None
    nuc = np.zeros(shp, dtype=np.float32)
    lab = np.zeros(shp, dtype=np.int32) if return_labels else None
    _render_ellipsoids(nuc, lab, seeds[keep], axes[keep], rots[keep], values[keep], tex)
    np.maximum(img, nuc, out=img)
    np.clip(img, 0.0, 1.0, out=img)
    if return_labels:
        return img, _sequential_labels(lab)
    return img


# ----------------------------------------------------------------------------- defocus series
def defocus_fields(n: int, size: int = 128, *, seed: int = 0, cell_diameter: float = 24.0,
                   depth: int = 9) -> np.ndarray:
    """``n`` 2D in-focus fields: the middle lateral slice of a nuclei + membranes phantom each.

    Field ``i`` is slice ``depth // 2`` of :func:`nuclei_membranes` of shape
    ``(depth, size, size)`` with seed ``seed * 100003 + i``, so every field is a different
    specimen (an *identity* of a defocus series) with cell outlines cut at varying angles and
    nuclei cut through at varying heights.

    Returns
    -------
    np.ndarray
        ``float32`` ``(n, size, size)`` in ``[0, 1]``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n must be a positive integer (number of fields), got {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise InputError(f"size must be an integer >= 8 (pixels), got {size!r}")
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise InputError(f"depth must be a positive integer (slices), got {depth!r}")
    out = np.empty((int(n), int(size), int(size)), dtype=np.float32)
    for i in range(int(n)):
        vol = nuclei_membranes((int(depth), int(size), int(size)), seed=int(seed) * 100003 + i,
                               cell_diameter=cell_diameter)
        out[i] = vol[int(depth) // 2]
    return out
