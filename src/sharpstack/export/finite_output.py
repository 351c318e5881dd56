"""Are a package's outputs finite? Its test input through bioimageio.core's pipeline for one
weight format: what ``validate`` (:func:`~sharpstack.export.package.test_package`) and the
bioimage.io consumer check (:mod:`sharpstack.export.consumers`) add to ``test_model``, whose
comparison lets values that are not finite through."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def non_finite_output(source: str | Path, weight_format: str) -> str | None:
    """What is wrong when the package's test input through ``weight_format``'s weights
    (bioimageio.core's pipeline, pre- and post-processing included) gives values that are not
    finite where its test output is finite; None when the output is fine."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import get_test_input_sample, get_test_output_sample
    from bioimageio.spec import load_model_description

    try:
        descr = load_model_description(str(source), perform_io_checks=False,
                                       format_version="latest")
        sample = get_test_input_sample(descr)
        expected = get_test_output_sample(descr)
        with create_prediction_pipeline(bioimageio_model=descr,
                                        weight_format=weight_format) as pp:
            result = pp.predict_sample_without_blocking(sample)
    except Exception as exc:  # noqa: BLE001 - test_model ran these; report, do not crash
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"the test input could not be run through the {weight_format} weights: {first}"
    for tid, tensor in result.members.items():
        got = np.asarray(tensor.data)
        want = expected.members.get(tid)
        finite_expected = want is None or bool(np.isfinite(np.asarray(want.data)).all())
        bad = int((~np.isfinite(got)).sum()) if got.dtype.kind in "fc" else 0
        if bad and finite_expected:
            return (f"the {weight_format} weights turn the package's test input into {bad} of "
                    f"{got.size} values that are not finite (NaN or inf) in output "
                    f"{tid!r}, where the package's test output is finite: the weights are "
                    f"damaged or were altered; get the package again or re-export it")
    return None
