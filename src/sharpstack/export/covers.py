"""Cover images: orthogonal views of a stack before and after restoration.

bioimage.io covers should be 2:1 PNGs under 500 kB; deepImageJ and the zoo website show them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["orthoviews_png", "panels_png"]


def _clip01(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, [0.5, 99.8])
    return np.clip((a - lo) / (hi - lo + 1e-12), 0, 1)


def orthoviews_png(stacks: Sequence[np.ndarray], titles: Sequence[str], path: str | Path, *,
                   z_aspect: Sequence[float] | None = None, size=(8.0, 4.0),
                   dpi: int = 100) -> Path:
    """Write a PNG with one column per stack: the central xy slice above the central xz slice.

    Parameters
    ----------
    stacks : sequence of ndarray, each (Z, Y, X)
        Stacks to show (e.g. input z-upsampled for display, restoration).
    titles : sequence of str
        Column titles.
    z_aspect : sequence of float, optional
        Physical z spacing / lateral pixel size of each stack (1 for isotropic), so that the
        xz view is drawn with true proportions.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(stacks)
    z_aspect = list(z_aspect) if z_aspect is not None else [1.0] * n
    fig, axes = plt.subplots(2, n, figsize=size, dpi=dpi, squeeze=False,
                             gridspec_kw={"height_ratios": [1, 1]})
    for j, (s, t, za) in enumerate(zip(stacks, titles, z_aspect)):
        s = np.asarray(s, dtype=np.float32)
        z, y, x = s.shape
        axes[0, j].imshow(_clip01(s[z // 2]), cmap="magma", interpolation="nearest")
        axes[0, j].set_title(f"{t}\nxy", fontsize=9)
        axes[1, j].imshow(_clip01(s[:, y // 2, :]), cmap="magma", aspect=za,
                          interpolation="nearest")
        axes[1, j].set_title("xz", fontsize=9)
        for a in axes[:, j]:
            a.set_xticks([])
            a.set_yticks([])
    fig.tight_layout()
    from ..io import write_file_atomic

    path = write_file_atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def panels_png(images: Sequence[np.ndarray], titles: Sequence[str], path: str | Path, *,
               dpi: int = 100) -> Path:
    """A figure with one column per image: 2D images side by side, 3D stacks as orthogonal
    views (:func:`orthoviews_png`). All images must have the same number of dimensions."""
    ndims = {np.ndim(a) for a in images}
    if ndims == {3}:
        return orthoviews_png(images, titles, path, size=(3.0 * len(images), 4.5), dpi=dpi)
    if ndims != {2}:
        raise ValueError(f"panels_png needs all 2D or all 3D images, got dims {sorted(ndims)}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 3.3), dpi=dpi, squeeze=False)
    for ax, img, title in zip(axes[0], images, titles):
        ax.imshow(_clip01(np.asarray(img, dtype=np.float32)), cmap="magma",
                  interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    from ..io import write_file_atomic

    path = write_file_atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
