"""The user-facing jobs behind the CLI: synthesise, train, export, validate, demo.

Each is one public function that reads and writes files; the CLI only parses options, calls
one of them and prints. Methods are reached only through the registry
(:func:`sharpstack.methods.get_method`): a run folder records its method, so ``export``,
``predict`` and ``zoo`` need no method flag. The methods themselves (``methods/``) never touch
files.

A run folder (``sharpstack train <method> ... RUN``) holds

- ``run.json``: method, settings (JSON), the method's record (training data, normalisation,
  voxel size used ...), the training summary and sharpstack's version;
- ``model.pt``: tensors only (network state dicts and arrays), read with
  ``torch.load(weights_only=True)``, so a run folder from someone else cannot execute code;
- the training loop's ``last.pt``, ``best.pt``, ``history.json`` and ``loss_curve.png``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InputError, OutputExistsError
from .methods import DEFAULT_METHOD, get_method
from .methods._base import Method, SynthResult, Trained, settings_from
from .training import TrainResult, atomic_torch_save

__all__ = ["synthesize", "train_run", "load_run", "export_run", "validate_package", "run_demo",
           "quality_from_summary", "LoadedRun", "RUN_FORMAT"]

RUN_FORMAT = 2
"""Version of the run-folder layout (``run.json`` + tensors-only ``model.pt``)."""


def _method(method: str | Method) -> Method:
    return method if isinstance(method, Method) else get_method(method)


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    if overwrite:
        return
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise OutputExistsError(
            f"{', '.join(existing)} already exist(s); choose another output folder or pass "
            "--overwrite")


def _inside(a: Path, b: Path) -> bool:
    """Is ``a`` the same as or inside ``b`` (both resolved)?"""
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


def check_output_apart(output: str | Path, inputs: Sequence[str | Path], *,
                       what: str = "output") -> None:
    """Refuse an output that is, contains or lies inside one of the inputs (so that writing
    or replacing it can never destroy an input)."""
    out = Path(output).resolve()
    for i in inputs:
        src = Path(i).resolve()
        if out == src or _inside(out, src) and src.is_dir() or _inside(src, out):
            raise InputError(f"the {what} {output} is, contains or lies inside the input {i}; "
                             f"choose an {what} path apart from the inputs")


def write_json_atomic(path: Path, obj: Any) -> None:
    from .io import write_file_atomic

    write_file_atomic(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str)))


# --------------------------------------------------------------------------------------------
# synthetic data
# --------------------------------------------------------------------------------------------

def _synth_names(synth: SynthResult) -> dict[str, str]:
    names = {}
    for k, v in synth.arrays.items():
        if isinstance(v, Path):
            continue
        names[k] = k if isinstance(v, (list, tuple)) else f"{k}.tif"
    return names


def synthesize(method: str | Method, out_dir: str | Path, *, overwrite: bool = False,
               **options: Any) -> dict[str, Any]:
    """Write the synthetic data of a method's protocol into ``out_dir`` (ImageJ TIFFs).

    ``options`` are fields of the method's synthetic-data model (dotted keys for nested
    ones, e.g. ``**{"psf.sigma_z": 8}``). Returns ``paths`` (name -> file or folder),
    ``inputs`` (the training inputs, in the method's order), ``sample``, ``settings`` (the
    training settings the data imply), ``info`` and the in-memory ``references`` (also as
    top-level keys, e.g. ``result["ground_truth_isotropic"]``).
    """
    from .io import write_tiff

    m = _method(method)
    if m.synth_model is None:
        raise InputError(f"{m.name} has no synthetic data protocol; train it on your own files")
    opts = settings_from(m.synth_model, options, options=m.synth_options,
                         what=f"{m.name} synth options")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, not a folder; give a folder for the synthetic "
                         f"data (it is created if missing)")
    synth = m.synthesize(opts)
    names = _synth_names(synth)
    _refuse_existing([out / n for n in names.values()], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for key, value in synth.arrays.items():
        if isinstance(value, Path):
            paths[key] = value
        elif isinstance(value, (list, tuple)):
            folder = out / names[key]
            if folder.exists() and overwrite:
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            for i, arr in enumerate(value):
                write_tiff(folder / f"{i:03d}.tif", arr, overwrite=overwrite)
            paths[key] = folder
        else:
            paths[key] = write_tiff(out / names[key], value, overwrite=overwrite)
    result: dict[str, Any] = {
        "paths": paths, "inputs": [paths[k] for k in synth.inputs],
        "sample": paths[synth.sample], "settings": synth.settings, "info": synth.info,
        "references": synth.references, "synth": synth,
    }
    for k, v in {**synth.references, **synth.info}.items():
        result.setdefault(k, v)
    return result


# --------------------------------------------------------------------------------------------
# run folders
# --------------------------------------------------------------------------------------------

@dataclass
class LoadedRun:
    """A run folder read back: its method, the trained run and ``run.json``."""

    method: Method
    trained: Trained
    info: dict[str, Any]
    path: Path

    @property
    def model(self) -> Any:
        return self.trained.model


def _run_json(out: Path, method: Method, settings, inputs: Sequence[Path], *,
              status: str, trained: Trained | None = None) -> dict[str, Any]:
    from . import __version__

    info: dict[str, Any] = {
        "sharpstack_run": RUN_FORMAT, "sharpstack_version": __version__, "method": method.name,
        "status": status, "settings": settings.model_dump(mode="json"),
        "inputs": [str(Path(i).resolve()) for i in inputs],
    }
    if trained is not None:
        r = trained.result
        info.update(record=trained.record, epochs_trained=len(r.history),
                    best_epoch=r.best_epoch, best_val_loss=r.best_val_loss,
                    stopped_early=r.stopped_early, seconds=r.seconds)
    return info


def save_run(out: Path, method: Method, trained: Trained, inputs: Sequence[Path]) -> Path:
    """Write ``model.pt`` (tensors only) and ``run.json`` of a finished training."""
    tensors = {name: {k: v.detach().cpu() for k, v in d.items()}
               for name, d in trained.tensors.items()}
    atomic_torch_save(tensors, out / "model.pt")
    write_json_atomic(out / "run.json", _run_json(out, method, trained.settings, inputs,
                                                   status="trained", trained=trained))
    return out


def _read_run_json(p: Path) -> dict[str, Any]:
    try:
        info = json.loads((p / "run.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        if (p / "model.pt").exists():
            raise InputError(f"{p} has a model.pt but no run.json: it was written by an older "
                             "sharpstack; train it again with this version") from None
        raise InputError(f"{p} is not a sharpstack run folder (no run.json); give the folder "
                         "that `sharpstack train` wrote") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{p / 'run.json'} cannot be read ({exc}); the run folder is "
                         "damaged: train again") from None
    if not isinstance(info, dict) or "method" not in info or "settings" not in info:
        raise InputError(f"{p / 'run.json'} is not a sharpstack run record; give the folder "
                         "that `sharpstack train` wrote")
    return info


def load_run(path: str | Path) -> LoadedRun:
    """Read a run folder written by :func:`train_run` (the folder, or its ``model.pt`` /
    ``run.json``). Nothing in it is executed: settings are JSON, tensors are read with
    ``weights_only=True``."""
    p = Path(path)
    if p.is_file() and p.name in ("model.pt", "run.json"):
        p = p.parent
    if not p.exists():
        from ._files import clean_stale

        clean_stale(p)  # a run being replaced (train --overwrite) when a kill came: put it back
    if not p.exists():
        raise InputError(f"{p} does not exist; train a model first (sharpstack train)")
    if not p.is_dir():
        raise InputError(f"{p} is not a run folder; give the folder that `sharpstack train` "
                         "wrote")
    info = _read_run_json(p)
    if info.get("status") != "trained" or not (p / "model.pt").exists():
        raise InputError(f"{p} holds an unfinished training (no final model); continue it with "
                         f"`sharpstack train {info.get('method')} ... --resume` or train again")
    method = get_method(str(info["method"]))
    settings = settings_from(method.settings_model, {},
                             base={**method.recorded_before, **info["settings"]},
                             what=f"settings recorded in {p / 'run.json'}")
    try:
        tensors = torch.load(p / "model.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a crafted or damaged file is a user error here
        raise InputError(f"{p / 'model.pt'} is not a readable sharpstack model "
                         f"({type(exc).__name__}); the run folder is damaged or not from "
                         "sharpstack: train again") from None
    if not isinstance(tensors, dict):
        raise InputError(f"{p / 'model.pt'} is not a sharpstack model file; train again")
    history: list[dict[str, Any]] = []
    hist_path = p / "history.json"
    if hist_path.exists():
        try:
            history = json.loads(hist_path.read_text()).get("history", [])
        except ValueError:
            history = []
    result = TrainResult(history=history, best_epoch=int(info.get("best_epoch", 0)),
                         best_val_loss=float(info.get("best_val_loss", float("nan"))),
                         stopped_early=bool(info.get("stopped_early", False)), out_dir=p,
                         seconds=float(info.get("seconds", 0.0)))
    trained = method.load(settings, info.get("record", {}), tensors, result)
    return LoadedRun(method=method, trained=trained, info=info, path=p)


_RUN_FILES = ("model.pt", "last.pt", "best.pt", "history.json", "loss_curve.png", "run.json")
"""What a training writes into its run folder (and what --overwrite replaces)."""


def _keep_other_files(old: Path, new: Path) -> None:
    """Give the new run folder ``new`` the user's own files of ``old`` (anything that is not
    a run file or a temporary) before ``new`` replaces ``old``: hard links where possible, so
    nothing is copied and ``old`` stays complete until the swap."""
    from ._files import OLD_PREFIX, TMP_PREFIX

    for p in old.iterdir():
        if (p.name in _RUN_FILES or p.name.startswith((TMP_PREFIX, OLD_PREFIX))
                or (new / p.name).exists()):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.copytree(p, new / p.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(p, new / p.name)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    if Path(src).is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def train_run(method: str | Method, inputs: Sequence[str | Path], out_dir: str | Path, *,
              settings: Mapping[str, Any] | None = None, resume: bool = False,
              overwrite: bool = False, progress: bool = False,
              voxel_size: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Train ``method`` on ``inputs`` into the run folder ``out_dir``.

    ``settings`` are fields of the method's settings model (dotted keys for nested ones;
    ``None`` values mean "not given"). On ``resume`` the run's recorded settings are the
    base and ``settings`` may change only what the loop allows (e.g. more epochs).
    ``voxel_size`` (micrometres per axis) overrides or completes the files' calibration.
    With ``overwrite`` an existing run is replaced only by a complete new one: the new run
    trains in a temporary folder beside it and is swapped in at the end, so bad input, an
    error or a kill leave the old run untouched.
    Returns the trained run, its path and the history.
    """
    m = _method(method)
    out = Path(out_dir)
    ins = [Path(i) for i in inputs]
    if len(ins) != len(m.inputs):
        raise InputError(f"{m.name} trains on {len(m.inputs)} input(s) "
                         f"({', '.join(i.name.upper() for i in m.inputs)}), got {len(ins)}")
    from .io import stack_file

    files = [stack_file(p) for p in ins]  # without a ':dataset' or ':scene=' selector
    for spec, p in zip(m.inputs, files):
        if not p.exists():
            raise InputError(f"{spec.name.upper()} {p} does not exist; check the path")
        if spec.kind == "file" and p.is_dir() and p.suffix.lower() not in (".zarr",):
            raise InputError(f"{spec.name.upper()} {p} is a folder; give a file")
        if spec.kind == "folder" and not p.is_dir():
            raise InputError(f"{spec.name.upper()} {p} is not a folder; give a folder of files")
    check_output_apart(out, files, what="run folder")
    from ._files import check_destination, clean_stale, remove_path, replace_atomically, temp_path

    check_destination(out / "run.json", "run folder")
    # under torchrun every process trains; only the first writes the run folder's records
    # (the loop itself writes checkpoints on rank 0 only)
    primary = int(os.environ.get("RANK", "0")) == 0
    if primary:  # what a killed --overwrite left beside the run (its unfinished replacement)
        clean_stale(out)
    base = None
    if resume:
        if not (out / "last.pt").exists():
            raise InputError(f"cannot resume: {out} has no checkpoint (last.pt); train without "
                             "--resume first")
        info = _read_run_json(out)
        if info["method"] != m.name:
            raise InputError(f"cannot resume {out} with {m.name}: it is a {info['method']} run; "
                             f"use `sharpstack train {info['method']} ... --resume`")
        base = {**m.recorded_before, **info["settings"]}
    else:
        existing = [out / n for n in ("model.pt", "last.pt")]
        if (out / "run.json").exists() and (out / "model.pt").exists():
            existing.append(out / "run.json")
        _refuse_existing(existing, overwrite)
    cfg = settings_from(m.settings_model, dict(settings or {}), options=m.options, base=base,
                        what=f"{m.name} settings")
    # --overwrite of an existing run trains into a temporary folder beside it and swaps it in
    # only once the new run is complete: bad input, an error or a kill leave the old run as
    # it was (a killed run's folder is removed by clean_stale on the next run)
    replacing = not resume and any((out / n).exists() for n in _RUN_FILES)
    work = (temp_path(out if out.name not in ("", ".", "..") else out.resolve())
            if replacing else out)
    created = not out.exists()
    if primary:
        work.mkdir(parents=True, exist_ok=not replacing)
    if primary and not resume:  # the settings are on record from the start, for --resume
        write_json_atomic(work / "run.json", _run_json(work, m, cfg, ins, status="training"))
    try:
        trained = m.train(ins, cfg, out_dir=work, resume=resume, progress=progress,
                          voxel_size=voxel_size)
        if primary:
            save_run(work, m, trained, ins)
            if replacing:
                _keep_other_files(out, work)
                replace_atomically(work, out)
    except BaseException:
        if primary and replacing:
            remove_path(work)
        elif primary and not resume and not (out / "last.pt").exists():  # nothing trained
            (out / "run.json").unlink(missing_ok=True)
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        raise
    trained.result.out_dir = out
    return {"trained": trained, "model": trained.model, "run": out,
            "model_path": out / "model.pt", "history": trained.result.history,
            "best_epoch": trained.result.best_epoch, "settings": trained.settings}


# --------------------------------------------------------------------------------------------
# export and validation
# --------------------------------------------------------------------------------------------

def export_run(run: str | Path, sample: str | Path, package_path: str | Path, *,
               deployable: str | None = None, as_folder: bool = False, overwrite: bool = False,
               quality: Mapping[str, Any] | None = None,
               authors: list[dict[str, str]] | None = None, license: str = "MIT",
               name: str | None = None, runtime_report: str | Path | None = None,
               log: Callable[[str], None] | None = None) -> Path:
    """Export a trained run as a bioimage.io package, tested before it is written.

    ``deployable``: one of the run's method's deployables (default: its first). ``sample`` is
    a file of the training kind: the test input (and sample TIFF) is cut from it.
    ``runtime_report`` (Markdown from ``benchmarks/old_runtimes.py``) goes into the card.
    ``log`` is called with the name of each stage as it starts (the CLI prints them).
    """
    from ._files import clean_stale, temp_dir
    from .export.package import build_package

    from ._files import check_destination

    out = Path(package_path)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; choose another path or pass --overwrite")
    if not as_folder and out.suffix.lower() != ".zip":
        raise InputError(f"package path {out} must end in .zip (or pass --as-folder)")
    check_destination(out, "package")
    from .io import stack_file

    if not stack_file(sample).exists():  # a path may choose a dataset or scene: 'x.h5:/raw'
        raise InputError(f"sample {sample} does not exist; give a stack of the training kind")
    check_output_apart(out, [run, stack_file(sample)], what="package")
    loaded = load_run(run)
    d = loaded.method.deployable(deployable)
    runtimes_text = ""
    if runtime_report is not None:
        rp = Path(runtime_report)
        if not rp.exists():
            raise InputError(f"runtime report {rp} does not exist")
        # demote the report's headings below the card's "## Old runtimes" section
        body = "\n".join("##" + ln if ln.startswith("#") else ln
                         for ln in rp.read_text().splitlines())
        runtimes_text = "## Old runtimes (benchmarks/old_runtimes.py)\n\n" + body
    curve = loaded.path / "loss_curve.png"
    made = _make_parents(out)  # a new folder for the package, as predict makes one
    try:
        clean_stale(out)
        with temp_dir(out) as tmp:
            if log is not None:
                log(f"preparing the {d.name} package (test input, cover, model card)")
            spec = loaded.method.package_spec(
                loaded.trained, Path(sample), d.name, workdir=tmp, name=name,
                authors=authors, license=license, quality=dict(quality) if quality else None,
                attachments=[curve] if curve.exists() else [], runtimes_text=runtimes_text)
            return build_package(spec, out, overwrite=overwrite, as_folder=as_folder, log=log)
    except BaseException:
        for folder in made:  # innermost first; only the ones this export made, if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _make_parents(path: Path) -> list[Path]:
    """Create the missing folders above ``path``; return them, innermost first."""
    made = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        made.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return made


def quality_from_summary(path: str | Path) -> dict[str, Any]:
    """The measured figures of a ``summary.json`` (demo, zoo, bench) for a model card."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read quality figures from {p}: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{p} is not a summary (a JSON object with a 'quality' section)")
    if isinstance(data.get("quality"), dict) and data["quality"]:
        return dict(data["quality"])
    out = {k: v for k, v in data.items()
           if isinstance(v, (int, float)) and (k.startswith("psnr") or k.startswith("ssim"))}
    if not out:
        raise InputError(f"{p} has no quality figures (a 'quality' section or psnr_*/ssim_* "
                         "entries)")
    return out


def validate_package(package: str | Path, weight_formats: Sequence[str] | None = None, *,
                     trust_code: bool = False,
                     log: Callable[[str], None] | None = None) -> tuple[bool, str]:
    """Run ``bioimageio.core.test_model`` offline for each weight format of a package.

    ``weight_formats`` default to every format the package has. ``pytorch_state_dict``
    weights whose architecture is not sharpstack's own are skipped (and said so) unless
    ``trust_code``: testing them would import code from the package. Returns
    ``(passed, report)``; the report names every format tested, skipped or failed. ``log``
    is called with the name of each stage (each format's test) as it starts.
    """
    from ._trust import TRUST_FLAG, check_format, find_rdf, load_rdf, state_dict_code, weight_files
    from .errors import PackageError
    from .export.package import test_package

    p = Path(package)
    if not p.exists():
        raise InputError(f"{p} does not exist; give a package .zip, folder or rdf.yaml")
    folder, name = find_rdf(p)  # refuses a package with several descriptions
    source = p if folder is None else folder / name
    rdf = load_rdf(p)
    check_format(rdf, str(p))
    gone = weight_files(p, rdf)
    if gone:
        rest = [f for f in (rdf.get("weights") or {}) if f not in gone]
        raise PackageError(
            f"{p} cannot be validated: " + "; ".join(
                f"{f} weights: {why}" for f, why in gone.items())
            + ". Get the complete package again (from the model zoo: `bioimageio package ID`)"
            + ("" if all("URL" in why for why in gone.values())
               else ", or re-export it if it is yours")
            + (f"; `sharpstack predict` still runs its {', '.join(rest)} weights" if rest else ""))
    present = sorted((rdf.get("weights") or {}).keys()) if isinstance(rdf.get("weights"),
                                                                        dict) else []
    if not present:
        raise PackageError(f"{p} has no weights entry; it is not a usable model package")
    asked = list(weight_formats or present)
    missing = [w for w in asked if w not in present]
    if missing:
        raise InputError(f"{p} has no {', '.join(missing)} weights; it has "
                         f"{', '.join(present)} (--weight-format)")
    lines, run = [], []
    for wf in asked:
        if wf == "pytorch_state_dict" and not trust_code:
            code = state_dict_code(p)
            if code.runs_package_code:
                lines.append(f"skipped pytorch_state_dict: {code.reason}")
                continue
        run.append(wf)
    if not run:
        raise PackageError(f"nothing to validate in {p} without running its code: "
                           + "; ".join(lines) + " (or validate another format)")
    try:
        ok, report = test_package(source, run, log=log)
    except Exception as exc:  # noqa: BLE001 - bioimageio raises many kinds; one message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PackageError(f"bioimageio.core could not test {p}: {first}") from None
    lines.insert(0, f"tested offline: {', '.join(run)}")
    if report:
        lines.append(report)
    return ok, "\n".join(lines) + (f"\n(run code from the package with {TRUST_FLAG})"
                                    if any(x.startswith("skipped") for x in lines) else "")


# --------------------------------------------------------------------------------------------
# the demo
# --------------------------------------------------------------------------------------------

def _figure(panels: list[tuple[str, Any]], path: Path) -> Path | None:
    from .export.covers import panels_png

    if not panels:
        return None
    return panels_png([np.asarray(a, dtype=np.float32) for _, a in panels],
                      [t for t, _ in panels], path)


def run_demo(method: str | Method | None = None, out_dir: str | Path = "demo_out", *,
             epochs: int | None = None, steps_per_epoch: int | None = None,
             overwrite: bool = False, progress: bool = False, log=None) -> dict[str, Any]:
    """The main job of a method: synthesise, train briefly, export every deployable the demo
    names (tested), restore the sample with one package, score it, draw a figure.

    Writes under ``out_dir``: ``data/``, ``run/``, one package per deployable
    (``<method>_<deployable>.zip``), the stack a package needs where it is not the sample
    (``<method>_<deployable>_input.tif``, e.g. resampled to isotropic voxels),
    ``restored.tif``, ``figure.png`` and ``summary.json`` (quality, which package is for which
    program, seconds per stage, and ``next_steps``: the files to open and how each program
    runs its package).
    """
    from .io import read_stack, write_tiff
    from .next_steps import demo_next_steps
    from .predict import predict_file

    m = _method(method or DEFAULT_METHOD)
    if m.demo is None:
        raise InputError(f"{m.name} has no demo")
    demo = m.demo
    out = Path(out_dir)
    deployables = [m.deployable(n) for n in demo.deployables] if demo.deployables \
        else list(m.deployables)
    packages = {d.name: out / f"{m.name}_{d.name}.zip" for d in deployables}
    inputs = {d.name: out / f"{m.name}_{d.name}_input.tif" for d in deployables}
    _refuse_existing([out / "summary.json", out / "data", out / "run", *packages.values(),
                      *inputs.values()], overwrite)
    if overwrite:
        for p in (out / "data", out / "run"):
            shutil.rmtree(p, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda msg: None)
    times: dict[str, float] = {}

    t = time.perf_counter()
    say(f"synthesising the {m.name} demo data")
    syn = synthesize(m, out / "data", overwrite=overwrite, **dict(demo.synth))
    times["synthesize"] = time.perf_counter() - t

    t = time.perf_counter()
    say(f"training {m.title}")
    settings = {**syn["settings"], **dict(demo.settings)}
    if epochs is not None:
        settings["epochs"] = epochs
    if steps_per_epoch is not None:
        settings["steps_per_epoch"] = steps_per_epoch
    trained = train_run(m, syn["inputs"], out / "run", settings=settings, overwrite=overwrite,
                        progress=progress)
    times["train"] = time.perf_counter() - t

    t = time.perf_counter()
    quality = m.evaluate(trained["trained"], syn["synth"])
    times["score_in_process"] = time.perf_counter() - t

    summary_packages = {}
    for d in deployables:
        t = time.perf_counter()
        say(f"exporting and validating the {d.name} package (torchscript, onnx, state dict)")
        export_run(out / "run", syn["sample"], packages[d.name], deployable=d.name,
                   overwrite=overwrite, quality=quality,
                   log=None if log is None else (lambda msg, d=d: say(f"  {d.name}: {msg}")))
        times[f"export_{d.name}"] = time.perf_counter() - t
        summary_packages[d.name] = {"path": str(packages[d.name].resolve()),
                                    "what": d.summary, "runs_in": list(d.claims),
                                    "input": str(Path(syn["sample"]).resolve())}
        given = m.consumer_input(trained["trained"], read_stack(syn["sample"]), d.name)
        if given is not None:  # what a program must be given, e.g. resampled to isotropic
            write_tiff(inputs[d.name], given, overwrite=True)
            summary_packages[d.name]["input"] = str(inputs[d.name].resolve())

    t = time.perf_counter()
    say(f"restoring the sample with the {demo.predict_with} package (sharpstack predict)")
    restored_path = out / "restored.tif"
    predict_file(packages[demo.predict_with], syn["sample"], restored_path, overwrite=overwrite,
                 progress=progress)
    times["predict"] = time.perf_counter() - t

    t = time.perf_counter()
    restored = read_stack(restored_path)
    scores = {k: round(float(v), 4) for k, v in m.score(syn["synth"], restored).items()}
    figure = _figure(m.figure(syn["synth"], restored.values), out / "figure.png")
    times["score_and_figure"] = time.perf_counter() - t
    summary = {
        "method": m.name, **scores,
        "quality": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in quality.items()},
        "package": str(packages[demo.predict_with].resolve()),
        "packages": summary_packages,
        "restored": str(restored_path.resolve()),
        "figure": str(figure.resolve()) if figure else None,
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "seconds_total": round(sum(times.values()), 1),
        "next_steps": demo_next_steps(
            m.name, restored=str(restored_path.resolve()),
            figure=str(figure.resolve()) if figure else None,
            packages=summary_packages,
            predict_with=demo.predict_with, deployables=[d.name for d in deployables]),
        "settings": trained["settings"].model_dump(mode="json"),
        "best_epoch": trained["best_epoch"], "about": demo.about,
        **{k: v for k, v in syn["info"].items() if k not in scores},
    }
    write_json_atomic(out / "summary.json", summary)
    return summary
