"""DQLR's before/after figure of a real stack: shallow, middle and deep slices and an xz
section for every column, each row on one grey scale (its whole stack's 0.5th-99.8th
percentiles) so that the loss of contrast with depth stays visible."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["real_figure"]


def real_figure(name: str, columns: Mapping[str, np.ndarray], path: str | Path) -> None:
    """Write ``path`` (PNG): one row per entry of ``columns`` (title -> ZYX stack, slice 0
    the shallowest), panels: slices at 1/6, 1/2 and 5/6 of the depth, and the xz section
    through the middle row (z down, stretched to the lateral size)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...io import write_file_atomic

    items = list(columns.items())
    z = next(iter(columns.values())).shape[0]
    zs = [int(round(f * (z - 1))) for f in (1 / 6, 1 / 2, 5 / 6)]
    fig, axes = plt.subplots(len(items), 4, figsize=(11, 2.8 * len(items)), dpi=100,
                             squeeze=False)
    for i, (title, stack) in enumerate(items):
        a = np.asarray(stack, dtype=np.float32)
        lo, hi = np.percentile(a, [0.5, 99.8])
        panels = [(f"z = {zz}", a[zz]) for zz in zs] + [("xz (z down)", a[:, a.shape[1] // 2])]
        for j, (label, img) in enumerate(panels):
            ax = axes[i, j]
            aspect = (img.shape[1] / img.shape[0]) if j == 3 else 1.0
            ax.imshow(np.clip((img - lo) / (hi - lo + 1e-12), 0, 1), cmap="gray",
                      interpolation="nearest", aspect=aspect)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label}", fontsize=8)
            if j == 0:
                ax.set_ylabel(title, fontsize=8)
    fig.suptitle(name, fontsize=10)
    fig.tight_layout()
    write_file_atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
