"""IsoNet's nuclei segmentation pipeline (intermodes threshold, hole filling, watershed),
on tiny synthetic data (sharpstack.methods.isonet.segmentation)."""

import numpy as np
import pytest
import scipy.ndimage as ndi

from sharpstack.errors import InputError
from sharpstack.methods.isonet import segmentation
from sharpstack.methods.isonet.segmentation import segment_nuclei, threshold_intermodes
from sharpstack.metrics import seg_score

from ._physics import balls as _balls


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_public_names():
    assert set(segmentation.__all__) == {"threshold_intermodes", "segment_nuclei"}


def test_intermodes_between_modes(rng):
    x = np.concatenate([rng.normal(100, 10, 6000), rng.normal(300, 20, 3000)])
    t = threshold_intermodes(x)
    assert 150 < t < 250
    # two-valued image: halfway between the two values (to within a bin)
    two = np.r_[np.zeros(500), np.full(300, 255.0)]
    assert threshold_intermodes(two) == pytest.approx(127.5, abs=1.0)


def test_intermodes_fails_clearly():
    # a strictly increasing histogram (bin i holds i + 1 values) has one mode and stays so
    unimodal = np.repeat(np.arange(256) + 0.5, np.arange(1, 257))
    with pytest.raises(InputError, match="did not converge"):
        threshold_intermodes(unimodal)
    with pytest.raises(InputError, match="constant"):
        threshold_intermodes(np.ones((5, 5)))


def test_segment_nuclei_separated_balls(rng):
    shape = (40, 56, 56)
    gt = _balls(shape, [(10, 12, 12, 6), (10, 12, 42, 7), (28, 40, 16, 7),
                        (28, 14, 34, 5), (27, 42, 42, 6)])
    img = ndi.gaussian_filter((gt > 0) * 100.0, 1) + 10 + rng.normal(0, 2, shape)
    lab = segment_nuclei(img, min_distance=3)
    assert lab.dtype == np.int32 and lab.shape == shape
    assert lab.max() == 5
    assert seg_score(gt, lab) > 0.9


def test_segment_nuclei_splits_touching_balls(rng):
    gt = _balls((36, 36, 52), [(18, 18, 18, 9), (18, 18, 33, 9)])
    assert ndi.label(gt > 0)[1] == 1  # they touch: one blob after thresholding
    img = ndi.gaussian_filter((gt > 0) * 100.0, 1) + 10 + rng.normal(0, 2, gt.shape)
    lab = segment_nuclei(img, min_distance=3)
    assert lab.max() == 2
    assert seg_score(gt, lab) > 0.9


def test_segment_nuclei_fills_holes_and_threshold():
    zz, yy, xx = np.indices((30, 30, 30))
    r2 = (zz - 15) ** 2 + (yy - 15) ** 2 + (xx - 15) ** 2
    shell = ((r2 <= 100) & (r2 > 16)).astype(np.float32) * 50
    lab = segment_nuclei(shell, threshold=25.0)
    assert lab.max() == 1
    assert lab[15, 15, 15] == 1  # the cavity is filled
    assert segment_nuclei(shell, threshold=60.0).max() == 0
    with pytest.raises(InputError):
        segment_nuclei(shell[0], threshold=25.0)
