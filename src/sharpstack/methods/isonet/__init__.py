"""IsoNet: self-supervised isotropic reconstruction (Weigert et al., MICCAI 2017).

Everything of the method lives in this folder:

- :mod:`.settings`: the training config, the PSF and the settings of ``sharpstack train isonet``;
- :mod:`.data`: training pairs from the lateral slices of the stack;
- :mod:`.task`: the loss, the training task, the trained model and in-process restoration;
- :mod:`.isonet_arch`: the networks and the deploy module (imports only torch; shipped in
  every package as the ``pytorch_state_dict`` architecture);
- :mod:`.plugin`: :class:`IsoNet`, the method behind the method interface;
- :mod:`.package` and ``card.md``: the bioimage.io package request and model card template;
- :mod:`.synth`: the synthetic protocol (``sharpstack synth isonet``, the Table 1 volumes);
- :mod:`.optics`: the confocal and light-sheet PSFs, the isotropic PSF and the lateral
  kernels; :mod:`.acquisition`: blur, axial subsampling, linear upsampling, the degraded
  training inputs (the Gaussian PSF, the phantoms and the noise are shared physics);
- :mod:`.bench`: the paper's Table 1 (``sharpstack bench isonet``), with :mod:`.segmentation`
  (the paper's nuclei segmentation).
"""

from .data import lateral_kernel_for, make_training_pairs
from .plugin import IsoNet
from .settings import IsoNetConfig, IsoNetSettings, PsfSpec
from .synth import IsoNetSynth
from .task import IsoNetModel, IsoNetTask, negative_psnr_loss, restore, train_isonet

__all__ = ["IsoNetConfig", "IsoNetTask", "IsoNetModel", "make_training_pairs", "train_isonet",
           "negative_psnr_loss", "lateral_kernel_for", "restore", "IsoNet", "IsoNetSettings",
           "IsoNetSynth", "PsfSpec"]
