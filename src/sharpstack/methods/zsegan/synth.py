"""ZSE-GAN's data for ``sharpstack synth zsegan`` and the demo: the paper's shared z-scans
(read in place, one held-apart scan as the sample) or synthetic z-scans with their true
in-focus fields (:func:`.phantom.zscan`)."""

from __future__ import annotations

from ...errors import InputError
from .._base import SynthResult
from .data import held_apart_files, shared_data_dir, stack_files
from .settings import ZSEGANSynth

__all__ = ["synthesize"]


def synthesize(options: ZSEGANSynth) -> SynthResult:
    """The data of :class:`ZSEGANSynth` ``options`` (arrays or the shared folders)."""
    from ...io import as_dataarray
    from .phantom import zscan

    o = options
    if o.source == "shared":
        root = shared_data_dir()
        files = stack_files(root / "zscans")
        if len(files) < o.zscans:
            raise InputError(f"{root / 'zscans'} has {len(files)} z-scans, fewer than "
                             f"--zscans {o.zscans}")
        sample = held_apart_files(root / "zscans", o.zscans, o.held_apart, o.seed)[0]
        return SynthResult(
            arrays={"zscans": root / "zscans", "infocus": root / "infocus",
                    "sample": sample},
            inputs=("zscans", "infocus"), sample="sample",
            settings={"zscan_limit": o.zscans, "val_count": o.held_apart, "seed": o.seed},
            info={"source": f"the paper's z-scans ({root}), read in place",
                  "sample_name": sample.name},
            references={})
    n = o.planes
    shape = (n, o.size, o.size)
    zs, fields = [], []
    for i in range(o.zscans + 1):
        st, f = zscan(shape, seed=o.seed * 1000 + i, sigma_max=o.sigma_max, return_field=True)
        zs.append(st)
        fields.append(f)
    infocus = [zscan(shape, seed=o.seed * 1000 + 500 + i, return_field=True)[1]
               for i in range(o.infocus)]
    return SynthResult(
        arrays={"zscans": [as_dataarray(z, "ZYX") for z in zs[:-1]],
                "infocus": [as_dataarray(f, "YX") for f in infocus],
                "sample": as_dataarray(zs[-1], "ZYX"),
                "sample_infocus": as_dataarray(fields[-1], "YX")},
        inputs=("zscans", "infocus"), sample="sample",
        settings={"n_planes": n, "val_count": o.held_apart, "seed": o.seed,
                  "crop": min(128, o.size // 4 * 4)},
        info={"source": f"synthetic z-scans {shape}, defocus blur up to {o.sigma_max} px"},
        references={"sample": zs[-1], "sample_infocus": fields[-1]})
