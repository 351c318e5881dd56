"""How fast and how lean ``sharpstack predict`` runs, against bioimageio.core and plain TorchScript.

One run prints, on one package and one stack (default: the IsoNet ``isotropic`` demo package
and a 64x256x256 stack):

- voxels/s of sharpstack predict in memory (``predict_array``), streamed OME-Zarr ->
  OME-Zarr (``predict_file``) and as a Dask graph on a ``LocalCluster`` of 2 workers, with
  the default weights for the CPU (ONNX Runtime) and with TorchScript;
- voxels/s of ``bioimageio.core.predict`` on the whole sample and with its blocking, with its
  default weights (``pytorch_state_dict``) and with TorchScript;
- voxels/s of plain TorchScript (and plain ONNX Runtime) on the whole, already normalised
  volume, and on the volume padded to the package's smallest valid size (the same work as a
  runner that follows the package);
- the compute limit measured in the same run: a float32 matmul's GFLOP/s divided by the
  package's FLOP per voxel (counted by ``torch.utils.flop_counter`` on the TorchScript
  network);
- for a cheap one-layer package (a 1x1x1 convolution with ``scale_range``, built here): the
  runner's voxels/s from OME-Zarr to OME-Zarr, and the peak RSS of ``sharpstack predict`` (a
  subprocess, the CLI) on a ~1 GB and a ~8 GB OME-Zarr input (``--memory-gb``).

Usage::

    sharpstack demo --out demo_out           # or any run exported with --deployable isotropic
    python benchmarks/predict_speed.py --package demo_out/isonet_isotropic.zip

Big files go to ``--work`` (default /tmp/predict_bench) and are deleted at the end unless
``--keep``. Run it with nothing else on the machine: every figure is wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")


def _clock(fn, repeat=1):
    """Best wall time of ``repeat`` calls of ``fn`` (and its last result)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def matmul_gflops(threads: int, n: int = 2048, repeat: int = 5) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    dt, _ = _clock(lambda: torch.mm(a, b), repeat)
    return 2 * n**3 / dt / 1e9


def flop_per_voxel(ts_path: Path, shape: tuple[int, ...]) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = torch.jit.load(str(ts_path)).eval()
    x = torch.rand(1, 1, *shape)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(x)
    return counter.get_total_flops() / x.numel()


def unpack(package: Path, work: Path) -> Path:
    folder = work / "package"
    shutil.rmtree(folder, ignore_errors=True)
    if package.suffix == ".zip":
        import zipfile

        zipfile.ZipFile(package).extractall(folder)
    else:
        shutil.copytree(package if package.is_dir() else package.parent, folder)
    return folder


def one_layer_package(folder: Path) -> Path:
    """A 1x1x1 convolution with scale_range pre-processing (TorchScript + ONNX weights)."""
    import torch
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as m

    folder.mkdir(parents=True, exist_ok=True)
    net = torch.nn.Conv3d(1, 1, 1).eval()
    with torch.no_grad():
        net.weight.fill_(2.0)
        net.bias.fill_(-1.0)
    x = torch.zeros(1, 1, 8, 16, 16)
    torch.jit.trace(net, x).save(str(folder / "weights.pt"))
    torch.onnx.export(net, x, str(folder / "weights.onnx"), opset_version=17,
                      input_names=["raw"], output_names=["out"], dynamo=False,
                      dynamic_axes={"raw": {0: "b", 2: "z", 3: "y", 4: "x"},
                                    "out": {0: "b", 2: "z", 3: "y", 4: "x"}})
    raw = m.TensorId("raw")
    space_in = [m.SpaceInputAxis(id=m.AxisId(a), size=m.ParameterizedSize(min=8, step=8))
                for a in "zyx"]
    space_out = [m.SpaceOutputAxis(id=m.AxisId(a),
                                   size=m.SizeReference(tensor_id=raw, axis_id=m.AxisId(a)))
                 for a in "zyx"]
    bc = [m.BatchAxis(), m.ChannelAxis(channel_names=[m.Identifier("c0")])]
    np.save(folder / "in.npy", np.zeros((1, 1, 8, 16, 16), np.float32))
    pre = [m.ScaleRangeDescr(kwargs=m.ScaleRangeKwargs(
        axes=[m.AxisId(a) for a in "zyx"], min_percentile=1.0, max_percentile=99.8))]
    descr = m.ModelDescr(
        name="one layer", description="a 1x1x1 convolution (benchmark of the runner itself)",
        authors=[m.Author(name="sharpstack benchmarks")],
        cite=[m.CiteEntry(text="none", doi=m.Doi("10.1000/xyz"))], license=m.LicenseId("MIT"),
        inputs=[m.InputTensorDescr(id=raw, axes=bc + space_in, preprocessing=pre)],
        outputs=[m.OutputTensorDescr(id=m.TensorId("out"), axes=bc + space_out)],
        weights=m.WeightsDescr(
            torchscript=m.TorchscriptWeightsDescr(source=folder / "weights.pt",
                                                  pytorch_version=m.Version("2.0")),
            onnx=m.OnnxWeightsDescr(source=folder / "weights.onnx", opset_version=17,
                                    parent="torchscript")))
    return save_bioimageio_package(descr, output_path=folder.with_suffix(".zip"))


def big_ome_zarr(path: Path, shape: tuple[int, int, int]) -> Path:
    """A uint16 OME-Zarr of ``shape`` filled chunk by chunk (never whole in memory)."""
    import dask.array as da

    from sharpstack.io import as_dataarray, write_ome_zarr

    rng = da.random.default_rng(0)
    data = (rng.gamma(2.0, 300.0, size=shape, chunks=(64, 256, 256)) + 100).astype(np.uint16)
    return write_ome_zarr(path, as_dataarray(data, "ZYX", {"z": 1.0, "y": 0.2, "x": 0.2}),
                          overwrite=True)


# The child's own peak: RUSAGE_CHILDREN of *this* process is the largest child so far (the
# Dask workers of the speed part included), so each command runs under a small wrapper
# process whose only child it is, and the wrapper reports that child's peak.
_RSS_WRAPPER = ("import resource, subprocess, sys\n"
                "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
                "sys.stderr.write(r.stderr[-2000:])\n"
                "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
                "sys.exit(r.returncode)\n")


def peak_rss_of(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of a child process, measured on that child alone."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *cmd], capture_output=True,
                          text=True)
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    kib = [int(line.split()[1]) for line in proc.stdout.splitlines()
           if line.startswith("PEAK_RSS_KIB")]
    return kib[-1] / 1024, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", type=Path, default=Path("demo_out/isonet_isotropic.zip"))
    ap.add_argument("--shape", default="64,256,256")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/predict_bench"))
    ap.add_argument("--one-layer-shape", default="64,1024,1024")
    ap.add_argument("--memory-gb", default="1,8", help="input sizes (GB) of the RSS test; '' skips it")
    ap.add_argument("--skip-bioimageio", action="store_true")
    ap.add_argument("--only-memory", action="store_true",
                    help="run only the peak-RSS test (one-layer package, --memory-gb inputs)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not args.only_memory and not args.package.exists():
        sys.exit(f"{args.package} not found: build it with `sharpstack demo --out demo_out` "
                 f"(speed does not depend on the weights: --epochs 1 --steps 1 will do)")

    import torch

    torch.set_num_threads(args.threads)
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline
    from bioimageio.core import predict as bio_predict
    from distributed import LocalCluster

    from sharpstack.io import as_dataarray, read_stack, write_stack
    from sharpstack.predict import load_model, predict_array, predict_file
    from sharpstack.predict.model import digest

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(v) for v in args.shape.split(","))
    n_vox = int(np.prod(shape))
    res: dict[str, float] = {}
    rows: list[tuple[str, float, str]] = []

    def row(name: str, seconds: float, note: str = "") -> None:
        res[name] = n_vox / seconds
        rows.append((name, n_vox / seconds, note))
        print(f"{name:60s} {n_vox / seconds / 1e6:8.3f} M voxels/s  ({seconds:.2f} s) {note}",
              flush=True)

    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    one = one_layer_package(work / "one_layer")  # the cheap package of both runner tests
    if not args.only_memory:
        pkg = args.package.resolve()
        folder = unpack(pkg, work)
        descr = load_model(pkg)
        model = digest(descr)
        ts_path = folder / descr.weights.torchscript.source.path
        onnx_path = folder / descr.weights.onnx.source.path if descr.weights.onnx else None
        sizes = {d: g.smallest_valid(n) for d, g, n in
                 zip("zyx", (model.space[a] for a in "zyx"), shape)}
        padded = tuple(max(sizes[d], n) for d, n in zip("zyx", shape))

        # ---------------------------------------------------------------- compute limit
        gflops = matmul_gflops(args.threads)
        fpv = flop_per_voxel(ts_path, (16, 96, 96))
        limit = gflops * 1e9 / fpv
        res["matmul_gflops"], res["flop_per_voxel"], res["compute_limit"] = gflops, fpv, limit
        print(f"compute limit: matmul {gflops:.1f} GFLOP/s / {fpv / 1e3:.1f} kFLOP per voxel "
              f"(counted on the TorchScript network) = {limit / 1e6:.3f} M voxels/s", flush=True)
        print(f"package: {model.name}; smallest valid input for {shape}: {padded} "
              f"({np.prod(padded) / n_vox:.2f}x the voxels)", flush=True)

        # ---------------------------------------------------------------- the stack
        rng = np.random.default_rng(0)
        stack = as_dataarray(rng.gamma(2.0, 300.0, size=shape).astype(np.float32), "ZYX",
                             {"z": 0.2, "y": 0.2, "x": 0.2})
        src = write_stack(work / "stack.ome.zarr", stack, overwrite=True)
        lo, hi = np.quantile(stack.values, [0.01, 0.998])
        x = torch.from_numpy(((stack.values - lo) / (hi - lo + 1e-6)).astype(np.float32))[None, None]

        # ---------------------------------------------------------------- plain runtimes
        net = torch.jit.load(str(ts_path)).eval()
        with torch.inference_mode():
            cold, _ = _clock(lambda: net(x))
            warm, ref = _clock(lambda: net(x))
        row("plain TorchScript, whole volume (first call)", cold)
        row("plain TorchScript, whole volume", warm, "(warm: the reference)")
        ts_plain = res["plain TorchScript, whole volume"]
        if padded != shape:
            xp = torch.from_numpy(np.pad(x.numpy(), [(0, 0), (0, 0)] + [
                (0, p - n) for p, n in zip(padded, shape)], mode="reflect"))
            with torch.inference_mode():
                net(xp)
                dt, _ = _clock(lambda: net(xp))
            row("plain TorchScript, padded to the package's valid size", dt, f"{padded}")
        if onnx_path is not None:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            xn = x.numpy()
            sess.run(None, {name: xn})
            dt, y = _clock(lambda: sess.run(None, {name: xn})[0])
            row("plain ONNX Runtime, whole volume", dt,
                f"(max |ONNX - TorchScript| {np.abs(y - ref.numpy()).max():.1e})")

        # ---------------------------------------------------------------- sharpstack
        for fmt in ("auto", "torchscript"):
            wf = None if fmt == "auto" else fmt
            dt, mem = _clock(lambda: predict_array(pkg, stack, weight_format=wf, threads=args.threads))
            row(f"sharpstack predict_array (in memory), {fmt} weights", dt)

            def streamed():
                out = work / "streamed.ome.zarr"
                return predict_file(pkg, src, out, weight_format=wf, threads=args.threads,
                                    overwrite=True)
            dt, out = _clock(streamed)
            same = np.array_equal(read_stack(out).values, mem.values)
            row(f"sharpstack predict_file (streamed, OME-Zarr -> OME-Zarr), {fmt} weights", dt,
                f"(identical to in memory: {same})")
        # default windows (sized to the memory budget) against one window and against the
        # old fixed default (64x256x256); the self-check is left out of the three timings
        from sharpstack.predict.tiling import DEFAULT_TILE

        win = {}
        for label, tile in (("default windows (memory-sized)", None),
                            ("one window", 1 << 30),
                            ("old fixed default windows 64x256x256", dict(DEFAULT_TILE))):
            logs: list[str] = []
            predict_array(pkg, stack, tile=tile, threads=args.threads, check=False)  # warm
            dt, _ = _clock(lambda: predict_array(pkg, stack, tile=tile, threads=args.threads,
                                                 check=False, log=logs.append), repeat=2)
            win[label] = dt
            row(f"sharpstack predict_array, {label}", dt, f"({logs[0].split(';')[0]})")
        res["default_over_one_window"] = win["default windows (memory-sized)"] / win["one window"]
        print(f"  default windows / one window: {res['default_over_one_window']:.2f}x the time "
              f"(target <= 1.10)", flush=True)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster:
            out = work / "dask.ome.zarr"
            dt, _ = _clock(lambda: predict_file(pkg, src, out, scheduler=cluster.scheduler_address,
                                                overwrite=True), repeat=2)
            diff = float(np.abs(read_stack(out).values - mem.values).max())
            row("sharpstack predict --scheduler (LocalCluster, 2 workers x 1 thread)", dt,
                f"(max |dask - in memory| {diff:.1e}; 2nd run: workers warm)")

        # ---------------------------------------------------------------- bioimageio.core
        if not args.skip_bioimageio:
            raw = stack.values[None, None]
            for label, wf in (("its default weights (pytorch_state_dict)", None),
                              ("TorchScript", "torchscript")):
                pp = create_prediction_pipeline(descr, weight_format=wf)
                sample = Sample(members={model.in_id: Tensor(raw, dims=model.in_dims)}, stat={},
                                id="s")
                dt, _ = _clock(lambda: bio_predict(model=pp, inputs=sample))
                row(f"bioimageio.core.predict, whole sample, {label}", dt)
                n = max(0, (min(256, shape[1]) - model.space["y"].min) // max(model.space["y"].step, 1))
                sample = Sample(members={model.in_id: Tensor(raw, dims=model.in_dims)}, stat={},
                                id="s")
                try:
                    dt, _ = _clock(lambda: bio_predict(model=pp, inputs=sample,
                                                       blocksize_parameter=n))
                except ValueError as exc:  # its blocks never shrink below the model's minimum
                    print(f"{'bioimageio.core.predict, blocksize_parameter=' + str(n) + ', ' + label:60s}"
                          f"   fails: {exc}", flush=True)
                else:
                    row(f"bioimageio.core.predict, blocksize_parameter={n}, {label}", dt)

        # ---------------------------------------------------------------- summary (IsoNet)
        best = max(v for k, v in res.items() if k.startswith("sharpstack predict_file"))
        print("\nratios (streamed sharpstack predict, best weights):")
        print(f"  / plain TorchScript whole volume: {best / ts_plain:.2f}x (target >= 0.95)")
        bio = [v for k, v in res.items() if "whole sample" in k]
        if bio:
            print(f"  / bioimageio.core.predict whole sample: {best / max(bio):.2f}x .. "
                  f"{best / min(bio):.2f}x (target >= 4)")
        print(f"  / compute limit: {best / limit:.2f}x", flush=True)

        # ---------------------------------------------------------------- the runner itself
        oshape = tuple(int(v) for v in args.one_layer_shape.split(","))
        osrc = big_ome_zarr(work / "one_in.ome.zarr", oshape)
        on = int(np.prod(oshape))
        for fmt in ("auto", "torchscript"):
            wf = None if fmt == "auto" else fmt
            times = []
            for _ in range(2):
                t = time.perf_counter()
                predict_file(one, osrc, work / "one_out.ome.zarr", weight_format=wf,
                             threads=args.threads, overwrite=True)
                times.append(time.perf_counter() - t)
            res[f"one layer {fmt}"] = on / min(times)
            print(f"{'one-layer package, OME-Zarr -> OME-Zarr, ' + fmt + ' weights':60s} "
                  f"{on / min(times) / 1e6:8.2f} M voxels/s  ({min(times):.2f} s for {oshape}, "
                  f"statistics pass included; target >= 30)", flush=True)

    # ---------------------------------------------------------------- peak RSS
    gbs = [float(v) for v in args.memory_gb.split(",") if v.strip()]
    exe = shutil.which("sharpstack") or str(Path(sys.executable).parent / "sharpstack")
    rss = {}
    for gb in sorted(gbs):
        nz = max(64, int(round(gb * 1e9 / (2048 * 2048 * 2) / 64)) * 64)
        big = big_ome_zarr(work / f"rss_{gb:g}.ome.zarr", (nz, 2048, 2048))
        dst = work / f"rss_{gb:g}_out.ome.zarr"
        peak, dt = peak_rss_of([exe, "predict", str(one), str(big), str(dst), "--overwrite",
                                "--threads", str(args.threads)])
        rss[gb] = peak
        res[f"peak_rss_MiB_{gb:g}GB"] = peak
        print(f"peak RSS, one-layer package, {gb:g} GB uint16 OME-Zarr ({nz}x2048x2048) -> "
              f"OME-Zarr: {peak:.0f} MiB in {dt:.0f} s ({nz * 2048 * 2048 / dt / 1e6:.1f} M "
              f"voxels/s, CLI process)", flush=True)
        shutil.rmtree(dst, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(big, ignore_errors=True)
    if len(rss) >= 2:
        a, b = min(rss), max(rss)
        print(f"peak RSS {b:g} GB / {a:g} GB: {rss[b] / rss[a]:.2f}x (target <= 1.2)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    if not args.keep:
        for p in ("stack.ome.zarr", "streamed.ome.zarr", "dask.ome.zarr", "one_in.ome.zarr",
                  "one_out.ome.zarr", "package", "one_layer", "one_layer.zip"):
            q = work / p
            shutil.rmtree(q, ignore_errors=True) if q.is_dir() else q.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
