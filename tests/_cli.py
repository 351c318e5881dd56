"""Assertions on CLI results shared by the command-line tests."""

from __future__ import annotations

from typer.testing import CliRunner

runner = CliRunner()


def ok(res):
    """The command succeeded (the output is shown when it did not)."""
    assert res.exit_code == 0, res.output
    return res


def clean_failure(res, *needles, code=2):
    """A user mistake: exit ``code``, one ``error:`` line naming every ``needle`` (case
    ignored), no traceback and no exception other than the exit."""
    assert res.exit_code == code, (res.exit_code, res.output)
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert res.output.count("error:") == 1, res.output
    low = res.output.lower()
    for n in needles:
        assert n.lower() in low, (n, res.output)


def walk(obj):
    """Every value of a JSON document (a run's run.json), depth first, the document first."""
    yield obj
    if isinstance(obj, dict):
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)
