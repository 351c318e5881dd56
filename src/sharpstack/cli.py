"""The ``sharpstack`` command line: thin commands, each calling one library function.

Methods plug in through the registry (:mod:`sharpstack.methods`): ``sharpstack train
<method>``, ``synth <method>``, ``bench <method>`` and ``demo [method]`` are built from what
each method declares (its inputs, options and settings model), so this module names no
method. ``export``, ``validate``, ``predict``, ``check`` and ``zoo`` find the method in the
run folder, package or recipe.

User mistakes (missing files, wrong axes, NaNs, existing outputs, invalid packages, bad
option values) are printed as one clear message with exit code 2, never as a traceback. An
unexpected failure prints a short message and the path of a log file holding the traceback
(``--debug`` shows it instead).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .errors import SharpstackError
from .methods import DEFAULT_METHOD, get_method, method_names
from .methods._base import Option, option_default

app = typer.Typer(
    name="sharpstack",
    help="Train microscopy restoration networks (`sharpstack methods` lists them) and ship "
         "them as BioImage Model Zoo packages that run in Fiji/deepImageJ, ilastik and QuPath.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

_DEBUG = {"on": os.environ.get("SHARPSTACK_DEBUG", "") not in ("", "0")}


@app.callback()
def _main(debug: Annotated[bool, typer.Option(
        "--debug/--no-debug", help="Show the full traceback of unexpected errors.")] = False
          ) -> None:
    if debug:
        _DEBUG["on"] = True


def _log_unexpected(exc: BaseException) -> Path | None:
    """Write the traceback of an unexpected error to a log file; return its path."""
    try:
        fd, name = tempfile.mkstemp(prefix=f"sharpstack-error-{time.strftime('%Y%m%d-%H%M%S')}-",
                                    suffix=".log")
        with os.fdopen(fd, "w") as fh:
            fh.write(f"sharpstack {' '.join(sys.argv[1:])}\n\n")
            fh.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return Path(name)
    except OSError:
        return None


def _show_warning(message, category, filename, lineno, file=None, line=None):
    import warnings

    if f"{os.sep}sharpstack{os.sep}" in str(filename):
        typer.secho(f"warning: {message}", err=True, fg=typer.colors.YELLOW)
    else:
        warnings._showwarning_orig(message, category, filename, lineno, file, line)


def _friendly(fn):
    """Turn sharpstack's user errors into a message and exit code 2; anything unexpected
    into a short message, a log file and exit code 1 (``--debug``: the traceback)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import warnings

        from ._files import signals_as_interrupts

        try:
            with signals_as_interrupts(), warnings.catch_warnings():
                # SIGTERM unwinds like Ctrl-C (temporaries removed); sharpstack's own warnings
                # are one "warning:" line, not a source location
                warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except SharpstackError as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.secho("interrupted", err=True)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
            # a path the user named is in the way (a file where a folder must go, a folder
            # that cannot be written): their mistake, so a message, not a crash log
            where = f" {exc.filename}" if exc.filename else ""
            typer.secho(f"error: cannot write{where}: {exc.strerror or exc}; choose another "
                        "output path (a folder where a folder is expected) or fix its "
                        "permissions", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence of the CLI
            if _DEBUG["on"]:
                raise
            log = _log_unexpected(exc)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            typer.secho(f"unexpected error: {type(exc).__name__}: {first}", err=True,
                        fg=typer.colors.RED)
            typer.secho(f"the details are in {log}; rerun with --debug to see them here, and "
                        "please report it" if log else "rerun with --debug to see the details",
                        err=True)
            raise typer.Exit(1) from None
    return wrapper


def _threads(threads: Optional[int]) -> None:
    if threads is None:
        return
    if threads < 1:
        raise SharpstackError(f"--threads must be a positive number of CPU threads, got "
                              f"{threads}")
    import torch

    torch.set_num_threads(threads)


def _parse_ints(text: Optional[str], n: Optional[int], what: str) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise SharpstackError(f"{what} must be integers like 64,128,128; got {text!r}") from None
    if not vals:
        raise SharpstackError(f"{what} is empty; give integers like 64,128,128")
    if n is not None and len(vals) not in (1, n):
        raise SharpstackError(f"{what} needs 1 or {n} integers, got {text!r}")
    if any(v < 1 for v in vals):
        raise SharpstackError(f"{what} must be positive integers, got {text!r}")
    if n is not None and len(vals) == 1:
        vals = vals * n
    return vals


def _tile(text: Optional[str]):
    """``--tile``: one number (every axis) or exactly three, Z,Y,X; anything else is refused
    (never dropped or shifted onto other axes)."""
    t = _parse_ints(text, None, "--tile")
    if t is None:
        return None
    if len(t) == 1:
        return t[0]
    if len(t) != 3:
        raise SharpstackError(
            f"--tile takes one number (the same window size along every axis) or three, Z,Y,X "
            f"(e.g. --tile 16,256,256; for a 2D model Z is the planes per window); got "
            f"{len(t)} numbers: {text!r}")
    return dict(zip("zyx", t))


def _stages(what: str):
    """A ``log`` callback that prints each stage of a long job on stderr as it starts, with
    the time since the first (``export [0:42] exporting ONNX (opset 17)``)."""
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        s = int(time.perf_counter() - t0)
        typer.echo(f"{what} [{s // 60}:{s % 60:02d}] {msg}", err=True)
    return say


def _voxel_size(text: Optional[str]):
    if text is None:
        return None
    from .io import parse_voxel_size

    return parse_voxel_size(text)


# --------------------------------------------------------------------------------------------
# commands built from a method's declarations
# --------------------------------------------------------------------------------------------

def _cli_default(o: Option, model) -> Any:
    """The value of option ``o`` that does what the command does without it (``...``:
    unknown): the model's default, seen through a bool option's ``parse`` (``--deep-first``
    sets ``depth_increases_with_z`` to ``not v``: a default True is ``--no-deep-first``)."""
    if model is None:
        return o.default
    value = option_default(model, o.key)
    if o.type is bool and o.parse is not None and value is not ...:
        hits = [b for b in (True, False) if o.parse(b) == value]
        return hits[0] if len(hits) == 1 else ...
    return value


def _opt_param(o: Option, model) -> inspect.Parameter:
    """A declared option as a Typer parameter; ``None`` when not given (the model's default,
    or on ``--resume`` the run's value, stays); a bool is the pair ``--FLAG/--no-FLAG``; the
    default shown is the one the command uses."""
    default = _cli_default(o, model)
    if o.type is bool:
        decl = f"--{o.flag}/--no-{o.flag}"
        shown = ("" if not isinstance(default, bool)
                 else f" (default: {'' if default else 'no-'}{o.flag})")
    else:
        decl = f"--{o.flag}"
        shown = "" if default is ... or default is None else f" (default: {_show(default)})"
    return inspect.Parameter(
        o.key.replace(".", "__"), inspect.Parameter.KEYWORD_ONLY, default=None,
        annotation=Annotated[Optional[o.type], typer.Option(decl, help=o.help + shown,
                                                            show_default=False)])


def _show(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return ",".join(str(x) for x in v)
    return str(v)


def _values(options: tuple[Option, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """CLI values -> settings keys (``None`` = not given), through each option's parser."""
    out = {}
    for o in options:
        v = kwargs.pop(o.key.replace(".", "__"), None)
        if v is not None and o.parse is not None:
            v = o.parse(v)
        out[o.key] = v
    return out


def _build(fn, params: list[inspect.Parameter], name: str, doc: str):
    fn.__signature__ = inspect.Signature(params)
    fn.__name__ = name.replace("-", "_")
    fn.__doc__ = doc
    return fn


def _arg(name: str, help: str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                             annotation=Annotated[Path, typer.Argument(help=help,
                                                                       metavar=name.upper())])


def _flag(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=annotation)


_OVERWRITE = Annotated[bool, typer.Option(help="Replace existing outputs.")]
_SCENE = Annotated[Optional[str], typer.Option(help="Scene (series, position) of a CZI, ND2 or LIF file that holds several: its index from 0 or its name.", show_default=False)]
_CHANNEL = Annotated[Optional[int], typer.Option(help="Channel of a multichannel input to use (index from 0).", show_default=False)]
_TIME = Annotated[Optional[int], typer.Option(help="Time point of a time series to use (index from 0).", show_default=False)]


def _select(paths: list[Path], kw: dict[str, Any]) -> list[Path]:
    """``--scene``, ``--channel``, ``--time`` (popped from ``kw``) into each input's path."""
    from .io import with_selection

    chosen = {k: kw.pop(k, None) for k in ("scene", "channel", "time")}
    return [with_selection(p, **chosen) for p in paths]
_THREADS = Annotated[Optional[int], typer.Option(help="CPU threads for torch.")]


train_app = typer.Typer(help="Train a restoration network: `sharpstack train METHOD ...` "
                             "(one subcommand per method).", no_args_is_help=True)
synth_app = typer.Typer(help="Synthetic data with ground truth of a method's protocol.",
                        no_args_is_help=True)
bench_app = typer.Typer(help="Quality benchmarks that reproduce the papers' tables.",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(synth_app, name="synth")
app.add_typer(bench_app, name="bench")


def _train_command(name: str) -> None:
    m = get_method(name)

    def run(**kw):
        from .workflows import train_run

        _threads(kw.pop("threads"))
        inputs = _select([kw.pop(i.name) for i in m.inputs], kw)
        out_dir = kw.pop("out_dir")
        resume, overwrite = kw.pop("resume"), kw.pop("overwrite")
        vs = _voxel_size(kw.pop("voxel_size"))
        res = train_run(m, inputs, out_dir, settings=_values(m.options, kw), resume=resume,
                        overwrite=overwrite, progress=True, voxel_size=vs)
        h = res["history"]
        record = res["trained"].record
        if record.get("training_data"):
            typer.echo(f"training data: {record['training_data']}")
        typer.echo(f"trained {len(h)} epochs; best epoch {res['best_epoch']} "
                   f"(validation loss {min(r['val_loss'] for r in h):.4g})")
        typer.echo(f"run: {res['run']}  (export it with `sharpstack export {res['run']} "
                   f"SAMPLE PACKAGE.zip`)")

    params = [_arg(i.name, i.help) for i in m.inputs]
    params.append(_arg("out_dir", "Run folder: checkpoints, logs, loss curve, run.json, "
                                  "model.pt."))
    params += [_opt_param(o, m.settings_model) for o in m.options]
    params += [
        _flag("voxel_size", Annotated[Optional[str], typer.Option(
            help="Voxel size Z,Y,X in micrometres (unit optional: 0.5,0.24,0.24um, "
                 "500,240,240nm; or z=0.5 for one axis): overrides or completes the file's "
                 "calibration.")], None),
        *([_flag("scene", _SCENE, None), _flag("channel", _CHANNEL, None),
           _flag("time", _TIME, None)] if any(i.kind != "folder" for i in m.inputs) else []),
        _flag("resume", Annotated[bool, typer.Option(
            help="Continue from OUT_DIR/last.pt (with the run's settings; more --epochs "
                 "allowed).")], False),
        _flag("overwrite", Annotated[bool, typer.Option(help="Replace an existing run.")],
              False),
        _flag("threads", _THREADS, None),
    ]
    train_app.command(name)(_friendly(_build(run, params, f"train_{name}",
                                             f"Train {m.title}: {m.summary}.")))


def _synth_command(name: str) -> None:
    m = get_method(name)

    def run(**kw):
        from .workflows import synthesize

        out_dir, overwrite = kw.pop("out_dir"), kw.pop("overwrite")
        res = synthesize(m, out_dir, overwrite=overwrite, **_values(m.synth_options, kw))
        for k, p in res["paths"].items():
            typer.echo(f"{k:24s} {p}")

    params = [_arg("out_dir", "Folder for the synthetic data.")]
    params += [_opt_param(o, m.synth_model) for o in m.synth_options]
    params.append(_flag("overwrite", _OVERWRITE, False))
    synth_app.command(name)(_friendly(_build(run, params, f"synth_{name}",
                                             f"Synthetic data of {m.title}'s protocol, with "
                                             "its ground truth.")))


def _bench_command(name: str) -> None:
    m = get_method(name)

    def run(**kw):
        _threads(kw.pop("threads"))
        out = kw.pop("out") or Path("bench_out") / name
        values = {k: v for k, v in _values(m.bench_options, kw).items() if v is not None}
        m.bench(Path(out), progress=True, **values)
        for table in sorted(Path(out).glob("*.md")):
            typer.echo(table.read_text())
        typer.echo(f"results: {out}")

    params = [_flag("out", Annotated[Optional[Path], typer.Option(
        help=f"Output folder (tables, CSV, figures; default: bench_out/{name}).",
        show_default=False)], None)]
    params += [_opt_param(o, None) for o in m.bench_options]
    shown = "" if m.bench_threads is None else f" (default: {m.bench_threads})"
    params.append(_flag("threads", Annotated[Optional[int], typer.Option(
        help="CPU threads (per job)." + shown, show_default=False)], m.bench_threads))
    bench_app.command(name)(_friendly(_build(run, params, f"bench_{name}",
                                             f"Benchmark {m.title} (the paper's tables).")))


for _name in method_names():
    _train_command(_name)
    if get_method(_name).has_synth:
        _synth_command(_name)
    if get_method(_name).has_bench:
        _bench_command(_name)


# --------------------------------------------------------------------------------------------
# commands that find the method in a run folder, a package or a recipe
# --------------------------------------------------------------------------------------------

@app.command("methods")
@_friendly
def methods_cmd():
    """List the restoration methods and the package forms (deployables) of each."""
    for name in method_names():
        m = get_method(name)
        typer.echo(f"{name}: {m.title}\n  {m.summary}")
        for d in m.deployables:
            typer.echo(f"  - {d.name}: {d.summary} [checked for: {', '.join(d.claims)}]")


@app.command("export")
@_friendly
def export_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder of `sharpstack train`.")],
    stack: Annotated[Path, typer.Argument(help="A stack (or image) of the training kind: the test input is cut from it.")],
    package: Annotated[Path, typer.Argument(help="Output package (.zip) or folder with --as-folder.")],
    deployable: Annotated[Optional[str], typer.Option(help="Which form of the model to package, e.g. one that Fiji or QuPath can run (default: the method's first; `sharpstack methods` lists each method's forms and the programs they run in).")] = None,
    as_folder: Annotated[bool, typer.Option(help="Write an unzipped folder (for QuPath).")] = False,
    name: Annotated[Optional[str], typer.Option(help="Model name.")] = None,
    author: Annotated[Optional[list[str]], typer.Option(help="Author name (repeat for several).")] = None,
    license: Annotated[str, typer.Option(help="SPDX license id.")] = "MIT",
    runtime_report: Annotated[Optional[Path], typer.Option(help="Markdown from benchmarks/old_runtimes.py to put in the model card.")] = None,
    quality: Annotated[Optional[Path], typer.Option(help="summary.json with measured quality (e.g. from sharpstack demo) for the model card.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing package.")] = False,
):
    """Export a trained run as a bioimage.io package, tested for every weight format."""
    from .workflows import export_run, quality_from_summary

    out = export_run(run, stack, package, deployable=deployable, runtime_report=runtime_report,
                     quality=quality_from_summary(quality) if quality else None,
                     as_folder=as_folder, overwrite=overwrite, name=name, license=license,
                     authors=[{"name": a} for a in author] if author else None,
                     log=_stages("export"))
    typer.echo(f"package written and tested (torchscript, onnx, pytorch_state_dict): {out}")


@app.command()
@_friendly
def validate(
    package: Annotated[Path, typer.Argument(help="Model package (.zip, folder or rdf.yaml).")],
    weight_format: Annotated[Optional[list[str]], typer.Option(help="Only these weight formats (default: all the package has).")] = None,
    trust_code: Annotated[bool, typer.Option("--trust-code/--no-trust-code", help="Also test pytorch_state_dict weights whose architecture code comes with the package (it runs that code).")] = False,
):
    """Validate a package with bioimageio.core (offline): format + test run per weight format."""
    from .workflows import validate_package

    ok, report = validate_package(package, weight_format, trust_code=trust_code,
                                  log=_stages("validate"))
    if ok:
        typer.echo(report)
        typer.echo(f"passed: {package}")
        return
    typer.echo(report)
    raise typer.Exit(1)


@app.command()
@_friendly
def predict(
    package: Annotated[Path, typer.Argument(help="Any bioimage.io model package (.zip, folder or rdf.yaml).")],
    input: Annotated[Path, typer.Argument(help="Input stack (TIFF, OME-Zarr, .npy, HDF5 as file.h5 or file.h5:/dataset, CZI, ND2, LIF); OME-Zarr, HDF5 and large TIFFs are read window by window.")],
    output: Annotated[Path, typer.Argument(help="Output, streamed window by window: .ome.zarr (chunked like the windows; resumable), .tif (ImageJ TIFF), .ome.tif, .npy.")],
    tile: Annotated[Optional[str], typer.Option(help="Window size Z,Y,X (or one number), halo included, rounded to sizes the package accepts; default: the largest window that fits --memory (the whole stack when it fits). For a 2D model run plane by plane, Z is planes per window.")] = None,
    memory: Annotated[Optional[float], typer.Option(help="GB one window may use when --tile is not given; default: half the memory available now, at most 8.")] = None,
    weight_format: Annotated[Optional[str], typer.Option(help="torchscript, onnx or pytorch_state_dict; default: the fastest present for the device (ONNX Runtime on a CPU, TorchScript on a GPU).")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or cuda:N; default: the GPU when torch sees one.")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Windows (or planes of a 2D model) per forward call, when the package allows a batch; default: about 4 M voxels per call (16 M on a GPU).")] = None,
    planes: Annotated[bool, typer.Option(help="Run a 2D model on a z-stack plane by plane (--no-planes: refuse).")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output (kept until the new one is complete).")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted OME-Zarr output where it stopped (same package, input and options).")] = False,
    dask: Annotated[bool, typer.Option("--dask/--no-dask", help="Run the windows as a Dask graph (OME-Zarr output), with the threads scheduler unless --scheduler says otherwise.")] = False,
    scheduler: Annotated[Optional[str], typer.Option(help="Dask scheduler: threads, processes, local (a LocalCluster of --workers processes) or the address of a running dask.distributed scheduler, e.g. tcp://host:8786. Implies --dask.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Dask threads or worker processes (threads, processes, local).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for the network (per process).")] = None,
    trust_code: Annotated[bool, typer.Option("--trust-code/--no-trust-code", help="Allow pytorch_state_dict weights whose architecture is code from the package (never chosen otherwise).")] = False,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Self-check first: the package's own test input through the same runner, weights and windows must reproduce its test output; otherwise stop before any output and say whether the weights or the windows are at fault. --no-check skips it.")] = True,
    voxel_size: Annotated[Optional[str], typer.Option(help="Voxel size of the input, Z,Y,X in micrometres (unit optional: 0.96,0.24,0.24um; or z=0.96 for one axis): overrides or completes the file's calibration; the output's follows the model's scaling.")] = None,
    scene: _SCENE = None,
    channel: _CHANNEL = None,
    time: _TIME = None,
    resample: Annotated[bool, typer.Option("--resample/--no-resample", help="Resample the input along z to isotropic voxels first (z interpolated to the pixel size, by the calibration's z/xy ratio), as `sharpstack resample` does: for packages that expect isotropic voxels (an isotropic-reconstruction package that keeps the z size, given a raw stack).")] = False,
    distribution_check: Annotated[bool, typer.Option("--distribution-check/--no-distribution-check", help="Compare the input with the training data's statistics the package records (intensity histogram after normalisation, noise level, power spectrum) and warn when it is far from them: the model may invent structure. --no-distribution-check skips it.")] = True,
):
    """Run a packaged model on a stack, tiled with its halo, streamed into the output; keeps the
    calibration right. Prints the whole-stack statistics used for normalisation."""
    from .predict import predict_file

    _threads(threads)
    tile_arg = _tile(tile)
    if workers is not None and workers < 1:
        raise SharpstackError(f"--workers must be a positive number, got {workers}")
    if dask and scheduler is None:
        scheduler = "threads"
    (input,) = _select([input], {"scene": scene, "channel": channel, "time": time})
    out = predict_file(package, input, output, tile=tile_arg, weight_format=weight_format,
                       device=device, threads=threads, batch=batch, planes=planes,
                       trust_code=trust_code, overwrite=overwrite, resume=resume,
                       scheduler=scheduler, voxel_size=_voxel_size(voxel_size), check=check,
                       workers=workers, progress=True, resample=resample, memory=memory,
                       distribution_check=distribution_check,
                       log=lambda m: typer.echo(m, err=True))
    typer.echo(f"written: {out}")


@app.command("resample")
@_friendly
def resample_cmd(
    input: Annotated[Path, typer.Argument(help="Anisotropic z-stack (TIFF, OME-Zarr, .npy), axes ZYX.")],
    output: Annotated[Path, typer.Argument(help="Resampled stack: .tif (ImageJ, written slab by slab), .ome.tif, .ome.zarr or .npy.")],
    factor: Annotated[Optional[float], typer.Option(help="z spacing / pixel size (any number >= 1.5, e.g. 2.5); default from the calibration.")] = None,
    voxel_size: Annotated[Optional[str], typer.Option(help="Voxel size Z,Y,X in micrometres: overrides or completes the file's calibration.")] = None,
    overwrite: _OVERWRITE = False,
):
    """Resample a z-stack to isotropic voxels: z linearly interpolated to the lateral pixel
    size, calibration written (Fiji shows the new z spacing). The input of packages that
    expect isotropic voxels (e.g. an isotropic-reconstruction package in Fiji)."""
    from .resample import resample_file

    res = resample_file(input, output, factor=factor, voxel_size=_voxel_size(voxel_size),
                        overwrite=overwrite)
    vs = res["voxel_size"]
    typer.echo(f"z x{res['factor']:g}: {res['shape_in']} -> {res['shape_out']} (ZYX), voxel "
               f"size {','.join(f'{vs[a]:.4g}' for a in 'zyx' if a in vs)} um")
    typer.echo(f"written: {res['path']}")


@app.command("psf")
@_friendly
def psf_cmd(
    beads: Annotated[Path, typer.Argument(help="Bead stack (ZYX) on the microscope's grid, calibrated (or --voxel-size).")],
    output: Annotated[Path, typer.Argument(help="The PSF: ZYX on an isotropic grid at the lateral pixel size, sum 1, calibrated (.tif, .ome.tif, .npy, .ome.zarr); `train ... --psf file --psf-file` takes it.")],
    png: Annotated[Optional[Path], typer.Option(help="Orthogonal views of the PSF (default: OUTPUT with .png).")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Minimum bead peak above the background, in the stack's units (default: median + 8 robust std, at least 10% of the brightest).")] = None,
    radius: Annotated[Optional[str], typer.Option(help="Crop half-sizes Z,XY (slices, lateral pixels); default twice the brightest bead's FWHM.")] = None,
    voxel_size: Annotated[Optional[str], typer.Option(help="Voxel size Z,Y,X in micrometres: overrides or completes the file's calibration.")] = None,
    overwrite: _OVERWRITE = False,
):
    """Measure the PSF from a bead stack: background removed, isolated beads found, centred
    to sub-voxel precision, averaged, resampled to isotropic voxels; prints the beads used and
    the FWHM and Gaussian sigma along x, y, z."""
    from .beads import psf_file

    r = _parse_ints(radius, None, "--radius")
    if r is not None and len(r) != 2:
        raise SharpstackError(f"--radius takes two numbers, Z,XY (e.g. 8,16); got {radius!r}")
    m, paths = psf_file(beads, output, png=png, voxel_size=_voxel_size(voxel_size),
                        threshold=threshold, radius=r, overwrite=overwrite)
    typer.echo(m.describe())
    for note in m.notes:
        typer.secho(f"warning: {note}", err=True, fg=typer.colors.YELLOW)
    typer.echo(f"written: {paths['psf']} (ZYX {m.psf.shape}, voxel {m.pixel_um:.4g} um) and "
               f"{paths['png']}")


@app.command()
@_friendly
def demo(
    method: Annotated[Optional[str], typer.Argument(help=f"Method to demonstrate: {', '.join(method_names())} (default: {DEFAULT_METHOD}).", show_default=False)] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo_out"),
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs (default: the method's demo budget).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Batches per epoch (default: the method's demo budget).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier demo in OUT.")] = False,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
):
    """The main job, no input needed: synthesise, train, export + validate, restore, score."""
    from .workflows import run_demo

    _threads(threads)
    for name, value in (("--epochs", epochs), ("--steps", steps)):
        if value is not None and value < 1:
            raise SharpstackError(f"{name} must be at least 1, got {value}")
    summary = run_demo(method or DEFAULT_METHOD, out, epochs=epochs, steps_per_epoch=steps,
                       overwrite=overwrite, progress=True,
                       log=lambda m: typer.echo(f"* {m}", err=True))
    shown = {k: v for k, v in summary.items()
             if k not in ("settings", "packages", "about", "quality", "next_steps")}
    typer.echo(json.dumps(shown, indent=2))
    typer.echo("packages:")
    for d, p in summary["packages"].items():
        typer.echo(f"  {d}: {p['path']}\n    {p['what']}; checked for {', '.join(p['runs_in'])}")
    typer.echo(f"summary: {Path(out) / 'summary.json'}")
    for line in summary["next_steps"]["text"]:  # the last lines: what to do now
        typer.echo(line)


@app.command()
@_friendly
def check(
    package: Annotated[Path, typer.Argument(help="Model package (.zip, folder or rdf.yaml).")],
    for_: Annotated[Optional[list[str]], typer.Option("--for", help="Consumers to check: bioimageio, deepimagej, ilastik, qupath (repeat; default all).")] = None,
    test: Annotated[bool, typer.Option(help="Also run bioimageio.core's test for every weight format.")] = False,
    trust_code: Annotated[bool, typer.Option("--trust-code/--no-trust-code", help="With --test: also test pytorch_state_dict weights whose architecture code comes with the package (it runs that code).")] = False,
    as_json: Annotated[bool, typer.Option("--json/--no-json", help="Print the report as JSON.")] = False,
):
    """Will this package open and run in Fiji/deepImageJ, ilastik, QuPath and bioimageio.core?

    Prints, per consumer, compatible or not and, for each failure, the rule and the fix. The
    exit code is 0 only if every consumer asked for (--for) is compatible.
    """
    from .export.consumers import check_package

    report = check_package(package, for_, run_bioimageio_test=test, trust_code=trust_code)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.to_text())
    if not report.ok(for_):
        raise typer.Exit(1)


@app.command()
@_friendly
def zoo(
    recipe: Annotated[Path, typer.Argument(help="A zoo recipe (zoo/*.yaml).")],
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("zoo/built"),
    overwrite: Annotated[bool, typer.Option(help="Replace earlier outputs.")] = False,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
):
    """Build a published model from its recipe: data, training, tested packages."""
    from .zoo import run_recipe

    _threads(threads)
    typer.echo(json.dumps(run_recipe(recipe, out, overwrite=overwrite, progress=True), indent=2))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
