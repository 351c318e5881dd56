"""Will this bioimage.io package run in Fiji/deepImageJ, ilastik and QuPath?

:func:`check_package` reads a package the way each consumer reads it (the *raw* ``rdf.yaml``,
not bioimageio.spec's pydantic model, plus the weight files inside the package) and answers,
per consumer, whether the package is usable there, with one :class:`Finding` per broken rule
(a stable rule id, the reason, and the fix).

The rules encode what the consumers' own source code does. Each rule names the source it
relies on in a comment (repository and file, as read in the public code):

- deepImageJ 3.x runs models through JDLL (``bioimage-io/JDLL``): model description in
  ``bioimageio/description/ModelDescriptor*.java``, tiling in ``tiling/TileMaker.java``,
  processing in ``transformations/*Transformation.java``; libtorch 2.0.0 and onnxruntime
  1.12/1.13 engines.
- ilastik runs models through tiktorch (``ilastik/tiktorch``: ``converters.py``
  ``InputTensorValidator``, ``server/grpc/inference_servicer.py``) and crops the result in
  ``ilastik/ilastik``: ``lazyflow/operators/tiktorch/classifier.py``; torch 2.7,
  bioimageio.core 0.10.
- QuPath parses the rdf.yaml with ``qupath/qupath-bioimageio-spec`` (``Model.java``,
  ``Resource.java``, ``tensor/Processing.java``) and turns the model into a 2D pixel
  classifier in ``qupath/qupath-extension-bioimageio`` (``BioimageIoCommand.java``); DJL with
  PyTorch 2.4.

Examples
--------
>>> report = check_package("model.zip", ["deepimagej", "qupath"])  # doctest: +SKIP
>>> report.ok()                                                   # doctest: +SKIP
False
>>> print(report.to_text())                                       # doctest: +SKIP

One module per consumer (:mod:`.deepimagej`, :mod:`.ilastik`, :mod:`.qupath`,
:mod:`.bioimageio`) holds that consumer's rules; :mod:`.checker` what they share,
:mod:`.rdf` the raw reading of a package and :mod:`.report` the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .bioimageio import BioimageioChecks
from .deepimagej import DeepImageJChecks
from .ilastik import IlastikChecks
from .qupath import QuPathChecks
from .rdf import RawPackage
from .report import CONSUMERS, CompatReport, ConsumerReport, Finding, normalise_targets

__all__ = ["CONSUMERS", "Finding", "ConsumerReport", "CompatReport", "check_package"]


class _PackageChecker(BioimageioChecks, DeepImageJChecks, IlastikChecks, QuPathChecks):
    """Every consumer's rules over one package (its ONNX weights are read once)."""


def check_package(source: str | Path, targets: Sequence[str] | str | None = None, *,
                  run_bioimageio_test: bool = False, trust_code: bool = False,
                  log: Callable[[str], None] | None = None) -> CompatReport:
    """Check whether a bioimage.io model package runs in each consumer.

    Parameters
    ----------
    source : str or Path
        A package ``.zip``, an unzipped package folder, or the path of its ``rdf.yaml``.
    targets : sequence of str, optional
        Consumers to check, from :data:`CONSUMERS` (``"bioimageio"``, ``"deepimagej"``,
        ``"ilastik"``, ``"qupath"``); default: all of them.
    run_bioimageio_test : bool
        For ``"bioimageio"``: also run ``bioimageio.core.test_model`` for every weight format
        (seconds to minutes). Without it only the offline spec validation runs.
    trust_code : bool
        Also test ``pytorch_state_dict`` weights whose architecture code comes with the
        package (importing it runs that code); otherwise they are skipped with a warning.
    log : callable, optional
        Called with the name of each consumer's check as it starts.

    Returns
    -------
    CompatReport
        ``report.compatible[consumer]`` and the findings (rule, reason, fix) per consumer.

    Raises
    ------
    InputError
        If ``source`` is not a spec-0.5 model package, or a target name is unknown (the
        message suggests the closest name).
    PackageError
        If the rdf.yaml is not readable YAML.
    """
    names = CONSUMERS if targets is None else normalise_targets(targets)
    pkg = RawPackage(source)
    try:
        checker = _PackageChecker(pkg)
        for name in names:
            if log is not None:
                log(f"checking the package for {name}")
            if name == "bioimageio":
                checker.check_bioimageio(run_bioimageio_test, trust_code)
            elif name == "deepimagej":
                checker.check_deepimagej()
            elif name == "ilastik":
                checker.check_ilastik()
            elif name == "qupath":
                checker.check_qupath()
        reports = {n: ConsumerReport(n, sorted(_dedupe(checker.findings.get(n, [])),
                                               key=lambda f: (f.severity != "error", f.rule)))
                   for n in CONSUMERS if n in names}
    finally:
        pkg.close()
    return CompatReport(source=str(source), consumers=reports)


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen, out = set(), []
    for f in findings:
        key = (f.rule, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
