"""DQLR: deep quantized latent representation for enhancing deep z-stack slices (Gupta et al.,
ISBI 2020).

Everything of the method lives in this folder:

- :mod:`.settings`: :class:`DQLRConfig`, the settings of ``sharpstack train dqlr``;
- :mod:`.data`: the training stacks and the clips of consecutive slices;
- :mod:`.task`: the loss, the training task, the trained model and in-process restoration;
- :mod:`.dqlr_arch`: the networks and the deploy module (imports only torch; shipped in every
  package as the ``pytorch_state_dict`` architecture);
- :mod:`.plugin`: :class:`DQLR`, the method behind the method interface;
- :mod:`.package` and ``card.md``: the bioimage.io package request and model card template;
- :mod:`.synth`: the synthetic protocol (depth-dependent degradation), with :mod:`.depth`
  (the blur whose width follows depth);
- :mod:`.evaluate`: depth bins and the measures per bin;
- :mod:`.bench`: the paper's tables (``sharpstack bench dqlr``), with :mod:`.baseline` (the
  slice-wise Richardson-Lucy baseline at its oracle iteration count).
"""

from .data import DQLRClips, make_datasets, prepare_stacks, read_training_stacks
from .evaluate import DEPTH_BINS, depth_bins, mean_gradient, score_depth_bins
from .plugin import DQLR
from .settings import DQLRConfig, min_slices
from .synth import DepthStack, DQLRSynth, synthetic_depth_stack
from .task import DQLRModel, DQLRTask, dqlr_loss, restore, train_dqlr

__all__ = ["DQLRConfig", "DQLRClips", "DQLRTask", "DQLRModel", "DepthStack", "dqlr_loss",
           "prepare_stacks", "make_datasets", "train_dqlr", "restore", "read_training_stacks",
           "synthetic_depth_stack", "min_slices", "DQLR", "DQLRSynth", "DEPTH_BINS",
           "depth_bins", "score_depth_bins", "mean_gradient"]
