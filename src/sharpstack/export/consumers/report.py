"""The answer of the consumer checks: one :class:`Finding` per broken rule, a
:class:`ConsumerReport` per consumer and the :class:`CompatReport` of a package."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ...errors import InputError

CONSUMERS: tuple[str, ...] = ("bioimageio", "deepimagej", "ilastik", "qupath")

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One broken rule for one consumer.

    Attributes
    ----------
    consumer : str
        One of :data:`CONSUMERS`.
    rule : str
        Short stable id, e.g. ``"deepimagej.documentation-plain-string"`` or ``"onnx.opset<=17"``.
    message : str
        What is wrong and why it matters for this consumer.
    fix : str
        What to change in the package.
    severity : {"error", "warning"}
        ``"error"`` makes the package incompatible with the consumer; a ``"warning"`` does not.
    """

    consumer: str
    rule: str
    message: str
    fix: str
    severity: Severity = "error"


@dataclass
class ConsumerReport:
    """The answer for one consumer: compatible or not, and why.

    Attributes
    ----------
    consumer : str
        One of :data:`CONSUMERS`.
    findings : list of Finding
        Errors and warnings for this consumer.
    """

    consumer: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def compatible(self) -> bool:
        """True when no finding for this consumer is an error."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        """The findings with severity ``"error"``."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        """The findings with severity ``"warning"``."""
        return [f for f in self.findings if f.severity == "warning"]


@dataclass
class CompatReport:
    """Per-consumer compatibility of one package.

    Attributes
    ----------
    source : str
        The package that was checked (zip, folder or rdf.yaml).
    consumers : dict of str to ConsumerReport
        One entry per checked consumer, in the order of :data:`CONSUMERS`.
    """

    source: str
    consumers: dict[str, ConsumerReport]

    @property
    def targets(self) -> tuple[str, ...]:
        """The consumers that were checked."""
        return tuple(self.consumers)

    @property
    def compatible(self) -> dict[str, bool]:
        """``{consumer: compatible}`` for every checked consumer."""
        return {name: rep.compatible for name, rep in self.consumers.items()}

    @property
    def findings(self) -> list[Finding]:
        """All findings of all checked consumers."""
        return [f for rep in self.consumers.values() for f in rep.findings]

    def ok(self, targets: Sequence[str] | str | None = None) -> bool:
        """Whether the package is compatible with every consumer in ``targets``.

        Parameters
        ----------
        targets : sequence of str, optional
            Consumers to require; default: every consumer that was checked.

        Returns
        -------
        bool

        Raises
        ------
        InputError
            If a target is unknown or was not checked.
        """
        names = self.targets if targets is None else normalise_targets(targets)
        missing = [n for n in names if n not in self.consumers]
        if missing:
            raise InputError(
                f"the report has no result for {missing}: it checked {list(self.targets)}; "
                f"run check_package(..., targets={list(names)!r})")
        return all(self.consumers[n].compatible for n in names)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: ``{"source", "ok", "consumers": {name: {...}}}``."""
        return {
            "source": self.source,
            "ok": self.ok(),
            "consumers": {
                name: {"compatible": rep.compatible,
                       "findings": [asdict(f) for f in rep.findings]}
                for name, rep in self.consumers.items()
            },
        }

    def to_text(self) -> str:
        """A readable table: consumer, compatible yes/no, then each finding with its fix."""
        width = max(len("consumer"), *(len(n) for n in self.consumers))
        lines = [f"compatibility of {self.source}", "",
                 f"{'consumer':<{width}}  compatible  errors  warnings",
                 f"{'-' * width}  ----------  ------  --------"]
        for name, rep in self.consumers.items():
            lines.append(f"{name:<{width}}  {'yes' if rep.compatible else 'NO':<10}  "
                         f"{len(rep.errors):>6}  {len(rep.warnings):>8}")
        for name, rep in self.consumers.items():
            if not rep.findings:
                continue
            lines += ["", f"{name}:"]
            for f in sorted(rep.findings, key=lambda f: (f.severity != "error", f.rule)):
                tag = "ERROR" if f.severity == "error" else "warn "
                lines.append(f"  {tag} {f.rule}: {f.message}")
                lines.append(f"        fix: {f.fix}")
        return "\n".join(lines)


def normalise_targets(targets: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(targets, str):
        targets = [targets]
    names: list[str] = []
    for t in targets:
        key = str(t).strip().lower().replace("-", "").replace("_", "").replace(".", "")
        alias = {"bioimageio": "bioimageio", "bioimageiocore": "bioimageio",
                 "deepimagej": "deepimagej", "fiji": "deepimagej", "ilastik": "ilastik",
                 "qupath": "qupath"}.get(key)
        if alias is None:
            guess = difflib.get_close_matches(str(t).lower(), CONSUMERS, n=1, cutoff=0.5)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            raise InputError(f"unknown consumer {t!r}{hint} Choose from {', '.join(CONSUMERS)}")
        if alias not in names:
            names.append(alias)
    return tuple(names)
