"""The ``sharpstack`` command line: thin commands, each calling one library function.

User mistakes (missing files, wrong axes, NaNs, existing outputs, invalid packages) are printed
as one clear message with exit code 2, never as a traceback.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import SharpstackError

app = typer.Typer(
    name="sharpstack",
    help="Restore anisotropic microscopy z-stacks with IsoNet and ship the trained networks as "
         "BioImage Model Zoo packages that run in Fiji/deepImageJ, ilastik and QuPath.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _friendly(fn):
    """Turn sharpstack's user errors into a message and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SharpstackError as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.secho("interrupted", err=True)
            raise typer.Exit(130) from None
    return wrapper


def _threads(threads: Optional[int]) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _parse_ints(text: Optional[str], n: Optional[int], what: str) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise SharpstackError(f"{what} must be integers like 64,128,128; got {text!r}") from None
    if n is not None and len(vals) not in (1, n):
        raise SharpstackError(f"{what} needs 1 or {n} integers, got {text!r}")
    if n is not None and len(vals) == 1:
        vals = vals * n
    return vals


PsfKind = typer.Option(help="PSF of the microscope: gaussian, confocal, "
                       "lightsheet or file.")


def _psf(kind, sigma_xy, sigma_z, na, na_illum, wavelength, n_immersion, pixel, psf_file):
    from .workflows import PsfSpec

    return PsfSpec(kind=kind, sigma_xy=sigma_xy, sigma_z=sigma_z, na=na, na_illum=na_illum,
                   wavelength_um=wavelength, n_immersion=n_immersion, pixel_um=pixel,
                   path=str(psf_file) if psf_file else None)


@app.command()
@_friendly
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder for the synthetic stacks.")],
    kind: Annotated[str, typer.Option(help="nuclei, membranes or nuclei+membranes.")] = "nuclei",
    shape: Annotated[str, typer.Option(help="Isotropic ground-truth size Z,Y,X (voxels).")] = "128,128,128",
    factor: Annotated[int, typer.Option(help="Axial subsampling: keep every FACTOR-th slice.")] = 8,
    psf: Annotated[str, PsfKind] = "gaussian",
    sigma_xy: Annotated[float, typer.Option(help="Gaussian PSF lateral sigma (pixels).")] = 2.0,
    sigma_z: Annotated[float, typer.Option(help="Gaussian PSF axial sigma (pixels).")] = 8.0,
    na: Annotated[float, typer.Option(help="Numerical aperture (detection) for confocal/light-sheet.")] = 1.1,
    na_illum: Annotated[float, typer.Option(help="Light-sheet illumination NA.")] = 0.1,
    pixel: Annotated[float, typer.Option(help="Pixel size in micrometres.")] = 0.2,
    photons: Annotated[float, typer.Option(help="Photons at the brightest voxel (Poisson noise); 0 = none.")] = 200.0,
    read_noise: Annotated[float, typer.Option(help="Gaussian read noise (fraction of max).")] = 0.01,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace existing files.")] = False,
):
    """Make a synthetic anisotropic stack with its ground truth (IsoNet's protocol)."""
    from .workflows import synthesize

    res = synthesize(out_dir, kind=kind, shape=_parse_ints(shape, 3, "--shape"),
                     psf=_psf(psf, sigma_xy, sigma_z, na, na_illum, 0.52, 1.33, pixel, None),
                     factor=factor, poisson_peak=photons or None, gauss_sigma=read_noise,
                     pixel_um=pixel, seed=seed, overwrite=overwrite)
    for k, p in res["paths"].items():
        typer.echo(f"{k:24s} {p}")


@app.command()
@_friendly
def train(
    stack: Annotated[Path, typer.Argument(help="Anisotropic stack (TIFF, OME-Zarr, .npy) with axes ZYX.")],
    out_dir: Annotated[Path, typer.Argument(help="Run folder: checkpoints, logs, loss curve, model.pt.")],
    factor: Annotated[Optional[int], typer.Option(help="z spacing / pixel size; default from the file's calibration.")] = None,
    psf: Annotated[str, PsfKind] = "gaussian",
    psf_file: Annotated[Optional[Path], typer.Option(help="Measured PSF (ZYX, isotropic grid) for --psf file.")] = None,
    sigma_xy: Annotated[float, typer.Option(help="Gaussian PSF lateral sigma (pixels).")] = 2.0,
    sigma_z: Annotated[float, typer.Option(help="Gaussian PSF axial sigma (pixels).")] = 8.0,
    na: Annotated[float, typer.Option(help="Detection NA (confocal/light-sheet).")] = 1.1,
    na_illum: Annotated[float, typer.Option(help="Illumination NA (light-sheet).")] = 0.1,
    wavelength: Annotated[float, typer.Option(help="Emission wavelength (micrometres).")] = 0.52,
    immersion: Annotated[float, typer.Option(help="Refractive index of the immersion medium.")] = 1.33,
    pixel: Annotated[Optional[float], typer.Option(help="Pixel size (micrometres); default from the file.")] = None,
    mode: Annotated[str, typer.Option(help="PSF used for training pairs: split (recommended), full, none.")] = "split",
    arch: Annotated[str, typer.Option(help="unet (IsoNet-2) or srcnn (IsoNet-1).")] = "unet",
    epochs: Annotated[int, typer.Option(help="Epochs (the paper: 100).")] = 100,
    steps_per_epoch: Annotated[Optional[int], typer.Option(help="Batches per epoch (default: all patches once).")] = None,
    patches: Annotated[int, typer.Option(help="Number of training patches.")] = 2048,
    patch_size: Annotated[int, typer.Option(help="Patch size (multiple of 16).")] = 64,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 16,
    lr: Annotated[float, typer.Option(help="Adam learning rate (the paper: 5e-3).")] = 5e-3,
    dropout: Annotated[float, typer.Option(help="Dropout after every convolution (the paper: 0.2; 0 restores 2 dB better after short trainings, see README Table 1).")] = 0.2,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without validation improvement.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from OUT_DIR/last.pt.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run.")] = False,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1 ...; default: GPU if present.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch.")] = None,
):
    """Train IsoNet on an anisotropic stack (self-supervised: no ground truth needed)."""
    from .io import read_stack
    from .workflows import train_from_file

    _threads(threads)
    if pixel is None and psf in ("confocal", "lightsheet"):
        pixel = float((read_stack(stack).attrs.get("voxel_size") or {}).get("x", 0.1))
    res = train_from_file(
        stack, out_dir,
        psf=_psf(psf, sigma_xy, sigma_z, na, na_illum, wavelength, immersion, pixel or 0.1,
                 psf_file),
        config={"factor": factor, "psf_mode": mode, "arch": arch, "epochs": epochs,
                "steps_per_epoch": steps_per_epoch, "n_patches": patches,
                "patch_size": patch_size, "batch_size": batch_size, "lr": lr,
                "dropout": dropout, "patience": patience, "seed": seed, "device": device},
        resume=resume, overwrite=overwrite, progress=True)
    h = res["history"]
    typer.echo(f"trained {len(h)} epochs; best epoch {res['best_epoch']} "
               f"(validation loss {min(r['val_loss'] for r in h):.3f} = -PSNR dB)")
    typer.echo(f"model: {res['model_path']}")


@app.command("export")
@_friendly
def export_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder of `sharpstack train` (or its model.pt).")],
    stack: Annotated[Path, typer.Argument(help="A stack of the training kind: the test input is cropped from it.")],
    package: Annotated[Path, typer.Argument(help="Output package (.zip) or folder with --as-folder.")],
    deployable: Annotated[str, typer.Option(help="upsample: raw stack in, z x factor out (bioimageio.core, sharpstack); isotropic: z-resampled stack in, same shape out (also deepImageJ, ilastik); slice2d: one axial slice (also QuPath).")] = "upsample",
    as_folder: Annotated[bool, typer.Option(help="Write an unzipped folder (for QuPath).")] = False,
    name: Annotated[Optional[str], typer.Option(help="Model name.")] = None,
    author: Annotated[Optional[list[str]], typer.Option(help="Author name (repeat for several).")] = None,
    license: Annotated[str, typer.Option(help="SPDX license id.")] = "MIT",
    runtime_report: Annotated[Optional[Path], typer.Option(help="Markdown from benchmarks/old_runtimes.py to put in the model card.")] = None,
    quality: Annotated[Optional[Path], typer.Option(help="summary.json with measured PSNR/SSIM (e.g. from sharpstack demo) for the model card.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing package.")] = False,
):
    """Export a trained model as a bioimage.io package, tested for every weight format."""
    from .workflows import export_run, quality_from_summary

    out = export_run(run, stack, package, deployable=deployable, runtime_report=runtime_report,
                     quality=quality_from_summary(quality) if quality else None,
                     as_folder=as_folder, overwrite=overwrite, name=name, license=license,
                     authors=[{"name": a} for a in author] if author else None)
    typer.echo(f"package written and tested (torchscript, onnx, pytorch_state_dict): {out}")


@app.command()
@_friendly
def validate(
    package: Annotated[Path, typer.Argument(help="Model package (.zip, folder or rdf.yaml).")],
    weight_format: Annotated[Optional[list[str]], typer.Option(help="Only these weight formats.")] = None,
):
    """Validate a package with bioimageio.core (offline): format + test run per weight format."""
    from .workflows import validate_package

    ok, report = validate_package(package, weight_format)
    if ok:
        typer.echo(f"passed: {package}")
        return
    typer.echo(report)
    raise typer.Exit(1)


@app.command()
@_friendly
def predict(
    package: Annotated[Path, typer.Argument(help="Any bioimage.io model package (.zip, folder or rdf.yaml).")],
    input: Annotated[Path, typer.Argument(help="Input stack (TIFF, OME-Zarr, .npy).")],
    output: Annotated[Path, typer.Argument(help="Output (.tif ImageJ TIFF, .ome.zarr, .npy).")],
    tile: Annotated[Optional[str], typer.Option(help="Tile size Z,Y,X (or one number); default from the package.")] = None,
    weight_format: Annotated[Optional[str], typer.Option(help="torchscript, onnx or pytorch_state_dict.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
):
    """Run a packaged model on a stack, tiled with its halo; keeps the calibration right."""
    from .predict import predict_file

    _threads(threads)
    t = _parse_ints(tile, None, "--tile")
    tile_arg = None
    if t is not None:
        tile_arg = t[0] if len(t) == 1 else dict(zip("zyx"[-len(t):], t))
    out = predict_file(package, input, output, tile=tile_arg, weight_format=weight_format,
                       overwrite=overwrite, progress=True)
    typer.echo(f"written: {out}")


@app.command()
@_friendly
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo_out"),
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 30,
    steps: Annotated[int, typer.Option(help="Batches per epoch.")] = 25,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier demo in OUT.")] = False,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
):
    """The main job, no input needed: synthesise, train IsoNet-2, export, validate, restore."""
    from .workflows import run_demo

    _threads(threads)
    summary = run_demo(out, epochs=epochs, steps_per_epoch=steps, overwrite=overwrite,
                       progress=True, log=lambda m: typer.echo(f"* {m}", err=True))
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"summary: {Path(out) / 'summary.json'}")


@app.command()
@_friendly
def check(
    package: Annotated[Path, typer.Argument(help="Model package (.zip, folder or rdf.yaml).")],
    for_: Annotated[Optional[list[str]], typer.Option("--for", help="Consumers to check: bioimageio, deepimagej, ilastik, qupath (repeat; default all).")] = None,
    test: Annotated[bool, typer.Option(help="Also run bioimageio.core's test for every weight format.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
):
    """Will this package open and run in Fiji/deepImageJ, ilastik, QuPath and bioimageio.core?

    Prints, per consumer, compatible or not and, for each failure, the rule and the fix. The
    exit code is 0 only if every consumer asked for (--for) is compatible.
    """
    from .export.compat import check_package

    report = check_package(package, for_, run_bioimageio_test=test)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.to_text())
    if not report.ok(for_):
        raise typer.Exit(1)


bench_app = typer.Typer(help="Quality benchmarks that reproduce the papers' tables.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("isonet")
@_friendly
def bench_isonet(
    out: Annotated[Path, typer.Option(help="Output folder (table1.md, table1.csv, figure).")] = Path("bench_out/isonet"),
    size: Annotated[str, typer.Option(help="Volume size Z,Y,X or one number (the paper: 512).")] = "160",
    volumes: Annotated[int, typer.Option(help="Volumes per dataset (the paper: 10).")] = 2,
    epochs: Annotated[int, typer.Option(help="Training epochs per model (the paper: 100).")] = 60,
    steps: Annotated[Optional[int], typer.Option(help="Batches per epoch.")] = None,
    datasets: Annotated[Optional[list[str]], typer.Option("--dataset", help="nuclei, membranes, nuclei+membranes (repeat; default all).")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda; default GPU if present.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (per job).")] = None,
    jobs: Annotated[int, typer.Option(help="Trainings at once, in worker processes (2 uses both cores of a 2-core CPU; results do not depend on it).")] = 1,
):
    """Reproduce IsoNet's Table 1 (PSNR of 7 methods on 3 datasets) and its SEG result."""
    from .bench.isonet import run_isonet_table1

    _threads(threads)
    dims = _parse_ints(size, 3, "--size")
    kwargs = {"size": dims[0] if len(set(dims)) == 1 else dims, "n_volumes": volumes, "epochs": epochs, "device": device,
              "seed": seed, "progress": True, "jobs": jobs}
    if steps:
        kwargs["steps_per_epoch"] = steps
    if datasets:
        kwargs["datasets"] = tuple(datasets)
    res = run_isonet_table1(out, **kwargs)
    table = Path(out) / "table1.md"
    if table.exists():
        typer.echo(table.read_text())
    typer.echo(f"results: {out}")
    return res


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
