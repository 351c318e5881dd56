"""`--help` says the truth: every command and subcommand of the CLI is walked; every boolean
option is a `--x/--no-x` pair; and for every option whose help shows a default, giving that
default explicitly does exactly what leaving the option out does (seen where the command
hands its values over: the library call, the settings the training would use, the protocol
function of a benchmark), while a boolean's other side changes it."""

from __future__ import annotations

import re
import shlex
import types
from pathlib import Path

import pytest
import typer
import typer.rich_utils
from typer.testing import CliRunner

from sharpstack import cli
from sharpstack.methods import get_method
from sharpstack.methods._base import settings_from

runner = CliRunner()
_SHOWN = re.compile(r"\[default: ([^\]]+)\]|\(default:? ([^;)]+)[;)]")


# Typer carries its own copy of click: its classes are told apart by what they have
def _is_group(cmd) -> bool:
    return hasattr(cmd, "list_commands")


def _sub(group, name):
    return group.commands[name]


def _walk(cmd, path: tuple[str, ...] = ()):
    yield path, cmd
    if _is_group(cmd):
        for name in cmd.commands:
            yield from _walk(_sub(cmd, name), path + (name,))


ROOT = typer.main.get_command(cli.app)
COMMANDS = list(_walk(ROOT))


def _invoke(args):
    """Run ``sharpstack ARGS`` through ROOT, the command tree walked here (whose callbacks a
    test may have replaced by recorders)."""
    import typer.testing

    get = typer.testing._get_command
    typer.testing._get_command = lambda app: ROOT if app is cli.app else get(app)
    try:
        return runner.invoke(cli.app, list(args))
    finally:
        typer.testing._get_command = get


def _options(cmd) -> list:
    return [p for p in cmd.params if p.param_type_name == "option" and p.name != "help"]


def _is_bool_flag(p) -> bool:
    return bool(p.is_flag and p.is_bool_flag)


def test_the_walk_reaches_every_command():
    names = {" ".join(p) for p, _ in COMMANDS}
    for expected in ("export", "validate", "predict", "demo", "check", "zoo", "methods",
                     "train dqlr", "train isonet", "synth isonet", "bench zsegan"):
        assert expected in names, sorted(names)


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) or "sharpstack"
                                                    for p, _ in COMMANDS])
def test_every_boolean_is_a_yes_no_pair(path, cmd):
    for p in _options(cmd):
        if _is_bool_flag(p):
            name = p.opts[0]
            assert p.secondary_opts == ["--no-" + name[2:]], (path, p.opts, p.secondary_opts)


def _shown_defaults(monkeypatch, path, rows=False):
    """Primary option -> the default its row of the rendered `--help` shows."""
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 3000)  # one line per option
    res = runner.invoke(cli.app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    shown, lines = {}, {}
    for line in res.output.splitlines():
        m = re.match(r"[│|]\s+(--[\w-]+)\s", line)
        if not m:
            continue
        lines[m.group(1)] = line
        found = _SHOWN.search(line)
        if found:
            shown[m.group(1)] = (found.group(1) or found.group(2)).strip()
    return (shown, lines) if rows else shown


# ---------------------------------------------------------------- what a command really gets

class _Recorded(Exception):
    pass


def _recorder(monkeypatch, path):
    """Patch what the command at ``path`` hands its values to; return (base args, read())
    where read() gives the values the command used, defaults resolved."""
    got: dict = {}
    if path[:1] == ("train",):
        m = get_method(path[1])

        def train_run(method, inputs, out_dir, *, settings, **kw):
            got.clear()
            got.update(kw, settings=settings_from(m.settings_model, settings,
                                                  options=m.options).model_dump(mode="json"))
            return {"history": [{"val_loss": 1.0}], "best_epoch": 1, "run": out_dir,
                    "trained": types.SimpleNamespace(record={})}

        monkeypatch.setattr("sharpstack.workflows.train_run", train_run)
        base = [*path, *("in" for _ in m.inputs), "out"]
    elif path[:1] == ("synth",):
        m = get_method(path[1])

        def synthesize(method, out_dir, *, overwrite, **options):
            got.clear()
            got.update(overwrite=overwrite, options=settings_from(
                m.synth_model, options, options=m.synth_options).model_dump(mode="json"))
            return {"paths": {}}

        monkeypatch.setattr("sharpstack.workflows.synthesize", synthesize)
        base = [*path, "out"]
    elif path[:1] == ("bench",):
        from .test_bench import _run_cli, _run_fn

        mod, fn = _run_fn(path[1])
        protocol = getattr(mod, fn)

        def read_bench(args):
            monkeypatch.setattr(mod, fn, protocol)  # _run_cli reads its defaults
            try:
                _, eff = _run_cli(monkeypatch, shlex.join([path[1], *args]))
            except AssertionError:  # the command refused the arguments
                return None
            if isinstance(eff.get("settings"), dict) and hasattr(mod, "reduced_settings"):
                eff["settings"] = get_method(path[1]).settings_model(  # its defaults
                    **mod.reduced_settings(**eff["settings"])).model_dump()
            return {k: v for k, v in eff.items() if k != "on_step"} | {
                "on_step": eff.get("on_step") is not None}
        return read_bench
    else:  # a command whose callback receives exactly what it runs with
        sub = ROOT
        for name in path:
            sub = _sub(sub, name)
        monkeypatch.setattr(sub, "callback", lambda **kw: got.update(kw))
        base = list(path) + ["x" for a in sub.params if a.param_type_name == "argument"
                             and a.required]

    def read(args):
        got.clear()
        res = _invoke([*base, *args])
        if res.exit_code != 0:
            return None
        return dict(got)
    return read


@pytest.mark.parametrize("path,cmd", [(p, c) for p, c in COMMANDS
                                      if not _is_group(c) or not p],
                         ids=[" ".join(p) or "sharpstack" for p, c in COMMANDS
                              if not _is_group(c) or not p])
def test_every_shown_default_is_the_real_one(monkeypatch, path, cmd):
    if not path:  # the root's options: the group callback records, `methods` runs after it
        got = {}
        monkeypatch.setattr(ROOT, "callback", lambda **kw: got.update(kw))
        methods = _sub(ROOT, "methods")
        monkeypatch.setattr(methods, "callback", lambda **kw: None)

        def read(args):
            got.clear()
            res = _invoke([*args, "methods"])
            assert res.exit_code == 0, res.output
            return dict(got)
    else:
        read = _recorder(monkeypatch, path)
    shown, shown_rows = _shown_defaults(monkeypatch, path, rows=True)
    omitted = read([])
    assert omitted is not None, f"{' '.join(path)} does not run with its defaults"
    checked = 0
    for p in _options(cmd):
        flag = p.opts[0]
        if flag not in shown:
            continue
        value = shown[flag]
        if _is_bool_flag(p):
            yes, no = flag, "--no-" + flag[2:]
            assert value in (yes[2:], no[2:]), (path, flag, value)
            same, other = (yes, no) if value == yes[2:] else (no, yes)
            assert read([same]) == omitted, (
                f"`{' '.join(path)} --help` shows {flag} default {value!r}, but giving {same} "
                "changes what the command does")
            assert read([other]) != omitted, (path, other)
        else:
            values = [v.strip() for v in value.split(",")] if p.multiple else [value]
            args = [a for v in values for a in (flag, v)]
            given = read(args)
            if given is None:
                continue  # a description ("default: GPU if present"), not a value
            if (p.name in omitted and omitted[p.name] in (None, ())
                    and f"[default: {value}]" not in shown_rows[flag]):
                continue  # the help's words for what happens without it ("all it has")
            assert given == omitted, (
                f"`{' '.join(path)} --help` shows {flag} default {value!r}, but giving it "
                f"changes what the command does")
        checked += 1
    assert checked or not shown, (path, shown)


def test_dqlr_help_shows_the_flags_that_the_defaults_are(monkeypatch):
    """The case of the issue: `--deep-first (default: True)` read as 'deep first by
    default', which it was not."""
    shown = _shown_defaults(monkeypatch, ("train", "dqlr"))
    assert shown["--deep-first"] == "no-deep-first"
    assert shown["--quantize"] == "quantize"
