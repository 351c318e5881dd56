"""bioimage.io itself: does bioimageio.spec accept the package, and (on request) does
bioimageio.core's test_model pass for every weight format?"""

from __future__ import annotations

from typing import Any

from ..finite_output import non_finite_output
from .checker import Checker

class BioimageioChecks(Checker):
    """The bioimage.io rules: bioimageio.spec validation and, on request, bioimageio.core's
    test_model for every weight format."""

    def check_plain_string_format_version(self) -> None:
        # bioimageio.spec (model/v0_5.py ModelDescr._convert_from_older_format) turns plain
        # `documentation`/`covers` strings into {source} only for format_version 0.5.x, x < 11;
        # a 0.5.11+ rdf.yaml with plain strings is rejected ("valid dictionary or FileDescr").
        doc, covers = self.rdf.get("documentation"), self.rdf.get("covers")
        plain = isinstance(doc, str) or (isinstance(covers, list)
                                         and any(isinstance(x, str) for x in covers))
        fv = _format_patch(str(self.rdf.get("format_version", "")))
        if plain and fv is not None and fv[:2] == (0, 5) and fv[2] >= 11:
            self.add("bioimageio", "bioimageio.plain-strings-need-format-0.5.10",
                     f"`documentation`/`covers` are plain strings but format_version is "
                     f"{self.rdf.get('format_version')}; bioimageio.spec converts plain strings "
                     "only for format_version < 0.5.11 and rejects this rdf.yaml",
                     "write `format_version: 0.5.10` together with the plain strings (bioimageio"
                     ".spec then converts them and validates the package as 0.5.12)")

    def check_bioimageio(self, run_test: bool, trust_code: bool = False) -> None:
        c = "bioimageio"
        from bioimageio.spec import load_description

        from ..._trust import odd_value, weight_files

        odd = odd_value(self.rdf, "")
        if odd is not None:
            self.add(c, "bioimageio.plain-yaml",
                     f"`{odd[0]}` holds a YAML {odd[1]}, which bioimageio.spec cannot read",
                     "write that entry as text, a number, a list or a mapping")
            return
        remote = {f: why for f, why in weight_files(self.pkg.validation_source, self.rdf).items()
                  if "URL" in why}
        if remote:
            self.add(c, "bioimageio.offline",
                     "not checked offline: " + "; ".join(f"{f} weights: {why}"
                                                         for f, why in remote.items()),
                     "download the complete package (from the model zoo: `bioimageio package "
                     "ID`) and check that")
            return
        try:
            descr = load_description(self.pkg.validation_source, perform_io_checks=True)
        except Exception as e:  # noqa: BLE001 - reported as a finding
            self.add(c, "bioimageio.spec-valid", f"bioimageio.spec could not load it: {e}",
                     "re-export the package with sharpstack's exporter")
            return
        summary = getattr(descr, "validation_summary", None)
        if type(descr).__name__ == "InvalidDescr" or (summary is not None
                                                        and summary.status == "failed"):
            msgs = _summary_messages(summary, "errors")
            self.add(c, "bioimageio.spec-valid",
                     "bioimageio.spec rejects the package: " + ("; ".join(msgs[:5]) or "invalid"),
                     "fix the listed fields and re-export")
        elif summary is not None:
            for m in _summary_messages(summary, "warnings")[:10]:
                self.add(c, "bioimageio.spec-warning", m, "see the bioimageio.spec warning",
                         "warning")
        self.check_plain_string_format_version()
        self.check_onnx(c, max_opset=None, max_ir=None, dynamic_batch=True)
        if run_test and type(descr).__name__ != "InvalidDescr":
            from bioimageio.core import test_model

            for wf in sorted(self.weights):
                if wf == "pytorch_state_dict" and not trust_code:
                    from ..._trust import state_dict_code

                    code = state_dict_code(self.pkg.validation_source)
                    if code.runs_package_code:
                        self.add(c, "bioimageio.test-model:pytorch_state_dict-skipped",
                                 f"not tested: {code.reason}", "pass --trust-code to test it",
                                 "warning")
                        continue
                try:
                    s = test_model(self.pkg.validation_source, weight_format=wf)
                except Exception as e:  # noqa: BLE001 - reported as a finding
                    self.add(c, f"bioimageio.test-model:{wf}", f"test_model raised {e}",
                             f"fix the {wf} weights and re-export")
                    continue
                if s.status != "passed":
                    msgs = _summary_messages(s, "errors")
                    self.add(c, f"bioimageio.test-model:{wf}",
                             f"bioimageio.core test_model failed for {wf}: "
                             + ("; ".join(msgs[:3]) or s.status),
                             f"recompute the test output with bioimageio.core or fix the {wf} "
                             "weights")
                    continue
                problem = non_finite_output(self.pkg.validation_source, wf)
                if problem:
                    self.add(c, f"bioimageio.test-model:{wf}", problem,
                             f"get the package again or re-export it with sound {wf} weights")


def _format_patch(fv: str) -> tuple[int, int, int] | None:
    try:
        parts = [int(p) for p in str(fv).split(".")[:3]]
    except ValueError:
        return None
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def _summary_messages(summary: Any, kind: str) -> list[str]:
    """Messages of a bioimageio ValidationSummary's failed details (``kind``: errors/warnings)."""
    out: list[str] = []
    if summary is None:
        return out
    for d in getattr(summary, "details", []) or []:
        for e in getattr(d, kind, []) or []:
            loc = ".".join(str(x) for x in getattr(e, "loc", ()) or ())
            msg = f"{loc}: {e.msg}" if loc else str(e.msg)
            if msg not in out:
                out.append(msg)
    return out
