"""Run any bioimage.io model package on a stack of any size, tiled with the package's halo.

``predict`` runs bioimage.io model packages (format 0.4 or 0.5, sharpstack's or anyone's) on
microscopy stacks: the stack is cut into windows that are valid inputs for the model, each
window carries the package's halo as context, and the kept part of each window's output goes
straight to its place in the output (see :mod:`.tiling` for the geometry).

Three ways to run, one engine (:mod:`.engine`), identical values:

- :func:`predict_array`: a stack in memory in, the output in memory out;
- :func:`predict_file`: streamed. Windows are read lazily from the input (OME-Zarr, or a
  TIFF through tifffile's zarr store) and each finished window is written into the output
  (OME-Zarr chunked by windows, a memory-mapped ImageJ/OME-TIFF, or a memory-mapped
  ``.npy``), so memory holds a few windows and the model whatever the stack size. The
  output is written under a temporary name beside the destination and renamed when
  complete; an interrupted OME-Zarr run can be continued (``resume=True``);
- :func:`predict_file` with ``scheduler=``: the windows as a Dask graph
  (:mod:`.dask_graph`), for a ``dask.distributed`` cluster.

Pre- and post-processing are the package's own steps, with statistics (``scale_range``
percentiles, mean/std) computed once over the whole stack by an exact streaming pass
(:mod:`.stats`: the same values as ``numpy.quantile`` of the whole stack), so a
tiled prediction equals an untiled one.

This package never imports :mod:`sharpstack.methods` or :mod:`sharpstack.nn`: it runs
third-party packages as well as ours.

The modules, each importing its siblings directly (never this ``__init__``):

- :mod:`.model`: loading a package (:func:`load_model`) and its digest (geometry, layout of
  the data on the model's axes, processing, output calibration);
- :mod:`.tiling`: the windows (core + halo) and the output chunks;
- :mod:`.engine`: weights and sessions (TorchScript, ONNX Runtime, state dict), the
  processing compiled onto the network's device, the :class:`~.engine.Runner`;
- :mod:`.windows`: windows read, run and cropped in a pipeline of threads;
- :mod:`.stats`: exact statistics of the whole stack in a streaming pass;
- :mod:`.sinks`: the outputs (memory, OME-Zarr, TIFF, ``.npy``), resume, destinations;
- :mod:`.job`: a prepared prediction, run window by window into a sink;
- :mod:`.selfcheck`: the self-check before a prediction;
- :mod:`.distribution`: the input compared with the training statistics a package records
  (``training_stats.json``), the out-of-distribution warning;
- :mod:`.run`: :func:`predict_array` and :func:`predict_file`;
- :mod:`.dask_graph`: the same windows as a Dask graph.

Default tile: 64 pixels along z and 256 along y and x (rounded to valid sizes), i.e. about
4 M voxels per 3D window; fixed-size models use their fixed size.
"""

from __future__ import annotations

from .model import load_model
from .run import WEIGHT_FORMAT_PRIORITY, predict_array, predict_file
from .tiling import DEFAULT_TILE

__all__ = [
    "DEFAULT_TILE",
    "WEIGHT_FORMAT_PRIORITY",
    "load_model",
    "predict_array",
    "predict_file",
]
