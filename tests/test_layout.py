"""The house rules of the layout (DESIGN.md): no import cycle between the modules of
src/sharpstack (function-level imports included), no module over 800 lines, every registered
method's code in its own folder ``methods/<name>/`` and no module naming another's private
names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "sharpstack"


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return mods


def _source_module(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    """The absolute name of the module a ``from ... import`` in ``mod`` imports from."""
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str, is_pkg: bool, tree: ast.AST, mods) -> set[tuple[str, str]]:
    """(module imported, name imported from it) for every import, at any level of the code."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {(a.name, "") for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            prefix = _source_module(mod, is_pkg, node)
            for a in node.names:
                sub = f"{prefix}.{a.name}"
                out.add((sub, "") if sub in mods else (prefix, a.name))
    return out


def _graph():
    mods = _modules()
    graph, private = {}, []
    for m, (f, is_pkg) in mods.items():
        deps = set()
        for target, name in _imports(m, is_pkg, ast.parse(f.read_text()), mods):
            d = target
            while d and d not in mods:
                d = d.rpartition(".")[0]
            if d and d != m and d.startswith("sharpstack"):
                deps.add(d)
                if name.startswith("_") and not name.startswith("__"):
                    private.append(f"{m} imports {name} from {d}")
        graph[m] = deps
    return mods, graph, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    _, graph, _ = _graph()
    assert _cycles(graph) == []


def test_no_module_over_800_lines():
    mods = _modules()
    big = {m: n for m, (f, _) in mods.items() if (n := len(f.read_text().splitlines())) > 800}
    assert big == {}


def test_no_module_imports_another_modules_private_names():
    _, _, private = _graph()
    assert private == []


@pytest.mark.parametrize("name", ["isonet", "dqlr", "zsegan", "disentangled"])
def test_a_methods_code_lives_in_its_folder(name):
    """Outside methods/<name>/, the method's name appears in no code, only in the registry,
    docstrings and comments."""
    pattern = re.compile(rf"\b{name}\b|{name}_", re.IGNORECASE)
    found = []
    for f in PKG.rglob("*.py"):
        if (PKG / "methods" / name) in f.parents:
            continue
        tree = ast.parse(f.read_text())
        # docstrings, attribute docstrings and other bare strings are documentation
        docs = {id(n.value) for n in ast.walk(tree)
                if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        for node in ast.walk(tree):
            if id(node) in docs:
                continue
            text = None
            if isinstance(node, ast.Name):
                text = node.id
            elif isinstance(node, ast.Attribute):
                text = node.attr
            elif isinstance(node, ast.alias):
                text = node.name
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                text = node.name
            if text and pattern.search(text):
                found.append(f"{f.relative_to(PKG)}:{getattr(node, 'lineno', '?')}: {text[:60]}")
    assert [x for x in found if not x.startswith("methods/__init__.py")] == []


SHARED_PHYSICS = ("degrade", "psf", "phantoms", "baselines")


def _top_level_names(tree: ast.Module) -> set[str]:
    return {n.name for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def _referenced(tree: ast.AST, mod: str, is_pkg: bool, mods, target: str) -> set[str]:
    """Names of ``target`` (a module) that the code of ``tree`` uses: imported from it by
    name (``from ..psf import x``) or as attributes of the module (``psf.x``, ``psfmod.x``)."""
    used, aliases = set(), set()
    for target_mod, name in _imports(mod, is_pkg, tree, mods):
        if target_mod == target and name:
            used.add(name)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            prefix = _source_module(mod, is_pkg, node)
            aliases |= {a.asname or a.name for a in node.names if f"{prefix}.{a.name}" == target}
        elif isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.name == target and a.asname}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases):
            used.add(node.attr)
    return used


def _physics_users(short: str) -> dict[str, set[str]]:
    """For every public top-level function or class of ``sharpstack.<short>``, who uses it:
    ``"shared"`` (a module outside ``methods/``) and/or ``"methods/<name>"``. A use by
    another function of the same module counts as a use by that function's users."""
    mods = _modules()
    target = f"sharpstack.{short}"
    path, _ = mods[target]
    tree = ast.parse(path.read_text())
    public = {n for n in _top_level_names(tree) if not n.startswith("_")}
    users: dict[str, set[str]] = {n: set() for n in public}
    for m, (f, is_pkg) in mods.items():
        if m == target:
            continue
        parts = m.split(".")
        who = f"methods/{parts[2]}" if len(parts) > 3 and parts[1] == "methods" else "shared"
        for name in _referenced(ast.parse(f.read_text()), m, is_pkg, mods, target) & public:
            users[name].add(who)
    # inside the module: a function used by another function inherits that one's users
    calls = {n.name: {x.id for x in ast.walk(n) if isinstance(x, ast.Name)}
             for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    changed = True
    while changed:
        changed = False
        for caller, names in calls.items():
            for name in names & public - {caller}:
                extra = users.get(caller, set()) - users[name]
                if extra:
                    users[name] |= extra
                    changed = True
    return users


def test_physics_usage_counter_sees_imports_attributes_and_inner_calls():
    """The counter behind the next test finds a use through every form the code takes."""
    psf = _physics_users("psf")
    assert "methods/isonet" in psf["gaussian_psf"]             # psfmod.gaussian_psf(...)
    assert "methods/zsegan" in psf["fit_defocus_sigmas"]       # from ...psf import name
    assert "methods/isonet" in _physics_users("degrade")["as_float32"]
    assert "shared" in _physics_users("errors")["InputError"]  # a module outside methods/
    # nuclei_membranes: isonet directly, zsegan through defocus_fields (same module)
    assert {"methods/isonet", "methods/zsegan"} <= _physics_users("phantoms")["nuclei_membranes"]


@pytest.mark.parametrize("short", SHARED_PHYSICS)
def test_shared_physics_is_shared(short):
    """Shared physics stays shared only where two methods use it (issue 18): no public
    function or class of the shared physics modules is used by exactly one method folder
    and by no shared code outside ``methods/``; what one method alone uses belongs in
    ``methods/<name>/``. (A name no code uses, such as ``baselines.richardson_lucy``, is
    library API for users, not one method's code.)"""
    users = _physics_users(short)
    alone = {name: sorted(who) for name, who in sorted(users.items()) if len(who) == 1
             and "shared" not in who}
    assert alone == {}, f"move these into the one method folder that uses them: {alone}"
