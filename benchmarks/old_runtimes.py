"""Do a package's weights load and reproduce its test output in the consumers' old runtimes?

deepImageJ runs TorchScript with libtorch 2.0.0 and ONNX with onnxruntime 1.12/1.13 (JDLL),
QuPath runs TorchScript with PyTorch 2.4 (DJL), ilastik with torch 2.7 (tiktorch). This script
creates one virtual environment per runtime (Python 3.10, cached under
``~/.cache/sharpstack/old_runtimes/`` and reused), loads the package's TorchScript / ONNX
weights in each, runs the package's test input and compares with the package's test output at
deepImageJ's CI tolerance ``|d| <= 1.5e-4 + 1e-4 * |expected|``.

Where processing happens (the choice): pre- and post-processing run in *this* interpreter with
bioimageio.core's own pipeline (``apply_preprocessing`` on the test input, then
``apply_postprocessing`` on each runtime's raw network output), so the old environments hold
only torch or onnxruntime plus numpy, and the comparison is against the package's own test
output, exactly what deepImageJ's CI compares.

Installing the old runtimes from PyPI only:

- torch 2.0.0 / 2.4.1 / 2.7.1 for Linux x86_64 exist on PyPI only as CUDA builds. The torch
  wheel is installed with ``--no-deps`` plus its pure-python dependencies; ``import torch``
  then fails (``libtorch_cuda.so`` is linked against cuBLAS/cuDNN: "libcublas.so.*[0-9] not
  found"), so the ``nvidia-*`` wheels named in the torch wheel's metadata are installed too
  (not ``triton``, which only ``torch.compile`` needs). Each torch env is about 4-4.6 GB.
- onnxruntime 1.12.1 / 1.13.1 are CPU wheels (~6 MB) with ``numpy<1.25``.

Usage::

    python benchmarks/old_runtimes.py PACKAGE [--out FILE] [--runtimes torch-2.0.0,ort-1.13.1]
    python benchmarks/old_runtimes.py --make-demo DIR [--route trace|script]

``--make-demo`` writes two tiny IsoNet-like packages (same ops as sharpstack's IsoNet deploy
module: Conv2d 7x7, MaxPool2d, nearest upsampling, ReLU, concatenation on xz/yz planes via
permute/reshape, sqrt(clamp(a,0)*clamp(b,0)) fusion, and a fixed ConvTranspose3d + replicate
F.pad z-upsampling): ``isonet_like_same.zip`` (same shape) and ``isonet_like_up4.zip``
(z upsampled x4).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_CACHE = Path(os.environ.get("SHARPSTACK_CACHE", Path.home() / ".cache" / "sharpstack"))
DEFAULT_CACHE = DEFAULT_CACHE / "old_runtimes"
ATOL, RTOL = 1.5e-4, 1e-4  # deepImageJ CI tolerance

# name -> (package, version, which consumer uses it)
RUNTIMES: dict[str, tuple[str, str, str]] = {
    "torch-2.0.0": ("torch", "2.0.0", "deepImageJ 3.x (JDLL libtorch 2.0.0)"),
    "torch-2.4.1": ("torch", "2.4.1", "QuPath (DJL PyTorch 2.4)"),
    "torch-2.7.1": ("torch", "2.7.1", "ilastik (tiktorch, torch 2.7)"),
    "ort-1.12.1": ("onnxruntime", "1.12.1", "deepImageJ 3.x (JDLL onnxruntime 1.12)"),
    "ort-1.13.1": ("onnxruntime", "1.13.1", "deepImageJ 3.x (JDLL onnxruntime 1.13)"),
}
TORCH_PURE_DEPS = ["filelock", "typing-extensions", "sympy", "networkx", "jinja2", "fsspec",
                   "packaging", "numpy<2"]

# Runs inside an old environment: load the weights, run one input, save the raw output.
RUNNER = r"""
import json, sys, time, traceback
import numpy as np
kind, weights, inp, out = sys.argv[1:5]
res = {"loads": False, "runs": False}
try:
    t = time.perf_counter()
    x = np.load(inp)
    if kind == "torchscript":
        import torch
        torch.set_num_threads(2)
        res["version"] = torch.__version__
        m = torch.jit.load(weights, map_location="cpu").eval()
        res["load_s"] = time.perf_counter() - t; res["loads"] = True
        t = time.perf_counter()
        with torch.no_grad():
            y = m(torch.from_numpy(x))
        y = (y[0] if isinstance(y, (tuple, list)) else y).numpy()
    else:
        import onnxruntime as ort
        res["version"] = ort.__version__
        so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.inter_op_num_threads = 1
        s = ort.InferenceSession(weights, so, providers=["CPUExecutionProvider"])
        res["load_s"] = time.perf_counter() - t; res["loads"] = True
        t = time.perf_counter()
        y = s.run(None, {s.get_inputs()[0].name: x})[0]
    res["run_s"] = time.perf_counter() - t; res["runs"] = True
    np.save(out, np.asarray(y, dtype=np.float32))
except BaseException as e:
    res["error"] = (type(e).__name__ + ": " + str(e)).strip().splitlines()[-1][:400]
    res["traceback"] = traceback.format_exc()[-2000:]
print("RESULT " + json.dumps(res))
"""


@dataclass
class Row:
    runtime: str
    version: str
    used_by: str
    weights: str
    loads: bool = False
    runs: bool = False
    max_abs_diff: float | None = None
    max_excess: float | None = None  # max(|d| - (atol + rtol*|expected|)); <= 0 passes
    passed: bool = False
    load_s: float | None = None
    run_s: float | None = None
    error: str = ""


@dataclass
class EnvInfo:
    name: str
    python: str
    install_s: float | None = None
    size_gb: float | None = None
    packages: list[str] = field(default_factory=list)
    note: str = ""


# ------------------------------------------------------------------------------------------
# environments
# ------------------------------------------------------------------------------------------


def find_python310(explicit: str | None) -> str:
    """A working Python 3.10 interpreter (explicit, PATH, or pyenv's versions folder)."""
    cands = [explicit] if explicit else []
    cands += [shutil.which("python3.10") or ""]
    cands += sorted(glob.glob(str(Path.home() / ".pyenv" / "versions" / "3.10*" / "bin" /
                                  "python3.10")), reverse=True)
    cands += ["/usr/bin/python3.10", "/usr/local/bin/python3.10"]
    for c in cands:
        if not c:
            continue
        try:
            out = subprocess.run([c, "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and "(3, 10)" in out.stdout:
            return c
    sys.exit("no working python3.10 found: install one (e.g. `apt-get install python3.10-venv` "
             "or pyenv) or pass --python /path/to/python3.10")


def _run(cmd: list[str], log) -> None:
    print("   $", " ".join(cmd), file=log, flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log.write(p.stdout[-4000:])
    if p.returncode != 0:
        raise RuntimeError(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-2000:]}")


def _dir_size_gb(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            fp = os.path.join(root, f)
            if not os.path.islink(fp):
                total += os.path.getsize(fp)
    return total / 1e9


NVIDIA_DEPS_SNIPPET = r"""
import importlib.metadata as md
from packaging.requirements import Requirement
out = []
for r in md.requires("torch") or []:
    req = Requirement(r)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if req.name.startswith("nvidia-"):
        out.append(str(req).split(";")[0].strip())
print(" ".join(out))
"""


def ensure_env(name: str, cache: Path, python: str, log) -> tuple[Path, EnvInfo]:
    """Create (or reuse) the virtual environment for runtime ``name``; return its python."""
    pkg, version, _ = RUNTIMES[name]
    env = cache / name
    py = env / "bin" / "python"
    info_file = env / "sharpstack_env.json"
    module = "torch" if pkg == "torch" else "onnxruntime"
    if py.exists() and subprocess.run([str(py), "-c", f"import {module}"],
                                      capture_output=True).returncode == 0:
        info = EnvInfo(**json.loads(info_file.read_text())) if info_file.exists() else \
            EnvInfo(name=name, python=str(py), note="reused (created before sizes were recorded)")
        return py, info
    size = "~0.6-0.9 GB torch + ~3 GB nvidia wheels" if pkg == "torch" else "~10 MB"
    print(f"-- creating {env} (downloads {size} once)",
          file=sys.stderr, flush=True)
    if env.exists():
        shutil.rmtree(env)
    t0 = time.perf_counter()
    _run([python, "-m", "venv", str(env)], log)
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if pkg == "torch":
        _run(pip + ["--no-deps", f"torch=={version}"], log)
        _run(pip + TORCH_PURE_DEPS, log)
        nv = subprocess.run([str(py), "-c", NVIDIA_DEPS_SNIPPET], capture_output=True, text=True,
                            check=True).stdout.split()
        # `import torch` of these CUDA wheels needs the nvidia libraries (cuBLAS, cuDNN, ...);
        # triton (torch.compile only) is left out.
        if nv:
            _run(pip + nv, log)
        packages = [f"torch=={version} (--no-deps)"] + TORCH_PURE_DEPS + nv
    else:
        packages = [f"onnxruntime=={version}", "numpy<1.25"]
        _run(pip + packages, log)
    info = EnvInfo(name=name, python=str(py), install_s=round(time.perf_counter() - t0, 1),
                   size_gb=round(_dir_size_gb(env), 2), packages=packages)
    info_file.write_text(json.dumps(asdict(info), indent=1))
    return py, info


# ------------------------------------------------------------------------------------------
# the package side (this interpreter, bioimageio.core)
# ------------------------------------------------------------------------------------------


def prepare(package: Path, work: Path):
    """Preprocessed test input, weight files, and a function mapping raw output -> final output."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import get_test_input_sample, get_test_output_sample
    from bioimageio.core.sample import Sample
    from bioimageio.core.tensor import Tensor
    from bioimageio.spec import load_model_description

    model = load_model_description(package, perform_io_checks=False)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        sys.exit(f"{package}: this benchmark handles one input and one output tensor")
    ipt, opt = model.inputs[0], model.outputs[0]
    in_axes = [str(a.id) for a in ipt.axes]
    out_axes = [str(a.id) for a in opt.axes]
    weights = {}
    for fmt in ("torchscript", "onnx"):
        entry = getattr(model.weights, fmt)
        if entry is None:
            continue
        dst = work / ("weights.pt" if fmt == "torchscript" else "weights.onnx")
        dst.write_bytes(entry.get_reader().read())
        weights[fmt] = dst
    if not weights:
        sys.exit(f"{package} has neither torchscript nor onnx weights")
    fmt = "torchscript" if "torchscript" in weights else "onnx"
    pp = create_prediction_pipeline(model, weight_format=fmt)
    sample = get_test_input_sample(model)
    pp.apply_preprocessing(sample)
    x = sample.members[ipt.id].data.transpose(*in_axes).values.astype(np.float32)
    np.save(work / "input.npy", x)
    expected = get_test_output_sample(model).members[opt.id].data.transpose(*out_axes).values

    def finish(raw: np.ndarray) -> np.ndarray:
        out = Sample(members={opt.id: Tensor(raw, dims=tuple(out_axes))}, stat=sample.stat,
                     id=sample.id)
        pp.apply_postprocessing(out)
        return out.members[opt.id].data.transpose(*out_axes).values

    return weights, x, expected, finish, pp


def compare(got: np.ndarray, expected: np.ndarray) -> tuple[float, float, bool]:
    if got.shape != expected.shape:
        return float("inf"), float("inf"), False
    d = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    excess = d - (ATOL + RTOL * np.abs(expected.astype(np.float64)))
    return float(d.max()), float(excess.max()), bool((excess <= 0).all())


def run_runtime(py: Path, fmt: str, weights: Path, work: Path, timeout: int) -> dict:
    out = work / f"out_{py.parent.parent.name}_{fmt}.npy"
    try:
        p = subprocess.run([str(py), "-c", RUNNER, fmt, str(weights), str(work / "input.npy"),
                            str(out)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"loads": False, "runs": False, "error": f"timed out after {timeout} s"}
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        return {"loads": False, "runs": False,
                "error": (p.stderr.strip().splitlines() or ["no output"])[-1][:400]}
    res = json.loads(line[len("RESULT "):])
    res["output"] = str(out)
    return res


def to_markdown(package: Path, rows: list[Row], envs: list[EnvInfo]) -> str:
    lines = [f"# Old runtimes: {package.name}", "",
             f"Tolerance: |d| <= {ATOL} + {RTOL}*|expected| (deepImageJ CI), against the "
             "package's test output after bioimageio.core pre/post-processing.", "",
             "| runtime | version | used by | weights | loads? | max abs diff | pass | load s "
             "| run s | error |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = "" if r.max_abs_diff is None else f"{r.max_abs_diff:.3g}"
        lines.append(f"| {r.runtime} | {r.version} | {r.used_by} | {r.weights} | "
                     f"{'yes' if r.loads else 'NO'} | {diff} | {'PASS' if r.passed else 'FAIL'} | "
                     f"{'' if r.load_s is None else f'{r.load_s:.2f}'} | "
                     f"{'' if r.run_s is None else f'{r.run_s:.2f}'} | {r.error} |")
    lines += ["", "| environment | install s | size GB | packages |", "|---|---|---|---|"]
    for e in envs:
        lines.append(f"| {e.name} | {e.install_s if e.install_s is not None else 'cached'} | "
                     f"{e.size_gb if e.size_gb is not None else ''} | "
                     f"{', '.join(e.packages) or e.note} |")
    return "\n".join(lines) + "\n"


def benchmark(package: Path, names: list[str], cache: Path, python: str, timeout: int,
              include_current: bool) -> tuple[list[Row], list[EnvInfo]]:
    cache.mkdir(parents=True, exist_ok=True)
    rows, envs = [], []
    with tempfile.TemporaryDirectory(prefix="sharpstack_old_rt_") as tmp, \
            open(cache / "install.log", "a") as log:
        work = Path(tmp)
        weights, _x, expected, finish, _pp = prepare(package, work)
        targets: list[tuple[str, Path, str, str]] = []  # (runtime, python, kind, used_by)
        if include_current:
            targets += [("current", Path(sys.executable), fmt, "this interpreter")
                        for fmt in weights]
        for name in names:
            pkg, _version, used_by = RUNTIMES[name]
            fmt = "torchscript" if pkg == "torch" else "onnx"
            if fmt not in weights:
                continue
            py, info = ensure_env(name, cache, python, log)
            envs.append(info)
            targets.append((name, py, fmt, used_by))
        for name, py, fmt, used_by in targets:
            res = run_runtime(py, fmt, weights[fmt], work, timeout)
            row = Row(runtime=name, version=res.get("version", RUNTIMES.get(name, ("", "?"))[1]),
                      used_by=used_by, weights=fmt, loads=res.get("loads", False),
                      runs=res.get("runs", False), load_s=res.get("load_s"),
                      run_s=res.get("run_s"), error=res.get("error", ""))
            if row.runs:
                got = finish(np.load(res["output"]))
                row.max_abs_diff, row.max_excess, row.passed = compare(got, expected)
                if got.shape != expected.shape:
                    row.error = f"output shape {got.shape} != expected {expected.shape}"
            rows.append(row)
            print(f"{row.runtime:<12} {row.version:<14} {row.weights:<11} "
                  f"loads={'yes' if row.loads else 'NO ':<3} "
                  f"max|d|={'' if row.max_abs_diff is None else f'{row.max_abs_diff:.3g}':<9} "
                  f"{'PASS' if row.passed else 'FAIL'} {row.error}", flush=True)
    return rows, envs


# ------------------------------------------------------------------------------------------
# demo packages with IsoNet's operators
# ------------------------------------------------------------------------------------------


def make_demo(out_dir: Path, route: str = "trace") -> list[Path]:
    """Write two tiny IsoNet-like packages (same shape and z x4) with TorchScript + ONNX 17."""
    import imageio.v3 as iio
    import tifffile
    import torch
    import torch.nn as nn
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as m

    from sharpstack.methods.isonet.isonet_arch import IsoNetDeploy

    def IsoLike(factor: int) -> nn.Module:  # noqa: N802 - the real deploy module, tiny
        return IsoNetDeploy("unet", {"base": 4, "depth": 1, "kernel": 7, "dropout": 0.0},
                            factor=factor, upsample=factor > 1)

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for factor, name in ((1, "isonet_like_same"), (4, "isonet_like_up4")):
        torch.manual_seed(0)
        net = IsoLike(factor).eval()
        src = out_dir / f"{name}_src"
        src.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        x = (rng.random((1, 1, 8, 32, 32)) * 1000).astype(np.float32)
        lo, hi = np.percentile(x, [1.0, 99.8])
        xp = ((x - lo) / (hi - lo + 1e-6)).astype(np.float32)
        with torch.no_grad():
            y = net(torch.from_numpy(xp)).numpy()
        assert y.shape[2] == 8 * factor, y.shape
        np.save(src / "test_input.npy", x)
        np.save(src / "test_output.npy", y)
        tifffile.imwrite(src / "sample_input.tif", x)
        tifffile.imwrite(src / "sample_output.tif", y)
        if route == "script":
            ts = torch.jit.script(net)
        else:
            ts = torch.jit.trace(net, torch.from_numpy(xp))
        ts.save(str(src / "weights.pt"))
        dyn = {"raw": {0: "b", 2: "z", 3: "y", 4: "x"},
               "restored": {0: "b", 2: "zo", 3: "y", 4: "x"}}
        torch.onnx.export(net, (torch.from_numpy(xp),), str(src / "weights.onnx"),
                          opset_version=17, dynamo=False, input_names=["raw"],
                          output_names=["restored"], dynamic_axes=dyn)
        (src / "README.md").write_text(
            "# IsoNet-like demo\n\n## Validation\n\nnone (benchmark demo)\n")
        iio.imwrite(src / "cover.png", np.zeros((32, 64, 3), np.uint8))
        zscale = float(factor)  # input z voxel = factor x output z voxel: size = ref * factor

        def ax_in(a, s=1.0, mn=16, st=16):
            return m.SpaceInputAxis(id=m.AxisId(a), scale=s,
                                    size=m.ParameterizedSize(min=mn, step=st))

        def ax_out(a, halo):
            return m.SpaceOutputAxisWithHalo(id=m.AxisId(a), halo=halo, size=m.SizeReference(
                tensor_id=m.TensorId("raw"), axis_id=m.AxisId(a)))

        descr = m.ModelDescr(
            name=name.replace("_", " "), description="IsoNet-like demo for old-runtime checks",
            authors=[m.Author(name="sharpstack benchmarks")],
            cite=[m.CiteEntry(text="Weigert et al. 2017",
                              doi=m.Doi("10.1007/978-3-319-66185-8_15"))],
            license=m.LicenseId("MIT"), tags=["demo"],
            documentation=m.FileDescr(source=src / "README.md"),
            covers=[m.FileDescr(source=src / "cover.png")],
            inputs=[m.InputTensorDescr(
                id=m.TensorId("raw"),
                axes=[m.BatchAxis(), m.ChannelAxis(channel_names=[m.Identifier("raw")]),
                      ax_in("z", zscale, 8, 8), ax_in("y"), ax_in("x")],
                test_tensor=m.FileDescr(source=src / "test_input.npy"),
                sample_tensor=m.FileDescr(source=src / "sample_input.tif"),
                data=m.IntervalOrRatioDataDescr(type="float32"),
                preprocessing=[m.ScaleRangeDescr(kwargs=m.ScaleRangeKwargs(
                    axes=[m.AxisId("z"), m.AxisId("y"), m.AxisId("x")],
                    min_percentile=1.0, max_percentile=99.8))])],
            outputs=[m.OutputTensorDescr(
                id=m.TensorId("restored"),
                axes=[m.BatchAxis(), m.ChannelAxis(channel_names=[m.Identifier("restored")]),
                      ax_out("z", 2 * factor), ax_out("y", 2), ax_out("x", 2)],
                test_tensor=m.FileDescr(source=src / "test_output.npy"),
                sample_tensor=m.FileDescr(source=src / "sample_output.tif"))],
            weights=m.WeightsDescr(
                torchscript=m.TorchscriptWeightsDescr(
                    source=src / "weights.pt",
                    pytorch_version=m.Version(torch.__version__.split("+")[0])),
                onnx=m.OnnxWeightsDescr(source=src / "weights.onnx", opset_version=17,
                                        parent="torchscript")),
        )
        zpath = save_bioimageio_package(descr, output_path=out_dir / f"{name}.zip")
        written.append(Path(zpath))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package", nargs="?", type=Path, help="bioimage.io package (.zip or folder)")
    ap.add_argument("--out", type=Path, help="write the table here (.md or .json; both are "
                    "written, named after this path)")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES),
                    help=f"comma-separated, from {', '.join(RUNTIMES)}")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                    help="where the virtual environments live (reused between runs)")
    ap.add_argument("--python", help="Python 3.10 interpreter for the environments")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per runtime run")
    ap.add_argument("--no-current", action="store_true",
                    help="skip the reference rows run in this interpreter")
    ap.add_argument("--make-demo", type=Path, metavar="DIR",
                    help="write two tiny IsoNet-like demo packages to DIR and exit")
    ap.add_argument("--route", choices=("trace", "script"), default="trace",
                    help="TorchScript export route for --make-demo")
    args = ap.parse_args(argv)
    if args.make_demo:
        for p in make_demo(args.make_demo, args.route):
            print(p)
        return 0
    if args.package is None:
        ap.error("give a PACKAGE (or --make-demo DIR)")
    names = [n.strip() for n in args.runtimes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNTIMES]
    if unknown:
        ap.error(f"unknown runtime(s) {unknown}; choose from {', '.join(RUNTIMES)}")
    python = find_python310(args.python)
    rows, envs = benchmark(args.package, names, args.cache, python, args.timeout,
                           not args.no_current)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        md = args.out.with_suffix(".md")
        md.write_text(to_markdown(args.package, rows, envs))
        args.out.with_suffix(".json").write_text(json.dumps(
            {"package": str(args.package), "atol": ATOL, "rtol": RTOL,
             "rows": [asdict(r) for r in rows], "environments": [asdict(e) for e in envs]},
            indent=1, default=str))
        print(f"wrote {md} and {args.out.with_suffix('.json')}")
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
