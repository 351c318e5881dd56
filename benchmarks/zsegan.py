"""Reproduce the ZSE-GAN paper's Tables 1-3 and figures on held-apart real z-scans.

Reduced run (the defaults: crop 48, 8 generator filters, 3 residual blocks, 16
discriminator filters, residual generators with nearest + conv upsampling, 40 epochs x 64
steps, 4 sections per adversarial term; about an hour on 2 CPU cores)::

    flock /tmp/sharpstack-heavy.lock /usr/bin/time -v python benchmarks/zsegan.py --out bench_out/zsegan --threads 2
    # the same as: sharpstack bench zsegan --out bench_out/zsegan --threads 2

Paper-size run (GPU; the reference notebook's networks and 200 epochs over the 64 training
z-scans of 128x128)::

    python benchmarks/zsegan.py --crop 128 --ngf 16 --res-blocks 6 --ndf 32 --sections 1 \\
        --no-residual --upsample transposed --epochs 200 --steps 64 --device cuda \\
        --out bench_out/zsegan_paper

Writes ``tables.md``, ``per_plane.csv``, ``results.json``, ``cross_sections.png``,
``gradient_histograms.png`` and ``fm_piqe.png`` to ``--out`` and prints the tables. See
:mod:`sharpstack.methods.zsegan.bench` for the protocol.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from sharpstack.methods.zsegan.bench import REDUCED

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_out/zsegan", help="output folder")
    p.add_argument("--crop", type=int, default=REDUCED["crop"], help="lateral crop (paper 128)")
    p.add_argument("--ngf", type=int, default=REDUCED["ngf"], help="generator filters (16)")
    p.add_argument("--res-blocks", type=int, default=REDUCED["n_res"], help="residual blocks (6)")
    p.add_argument("--ndf", type=int, default=REDUCED["ndf"], help="discriminator filters (32)")
    p.add_argument("--sections", type=int, default=REDUCED["sections"],
                   help="sections per adversarial term and step (notebook 1)")
    p.add_argument("--epochs", type=int, default=REDUCED["epochs"], help="epochs (200)")
    p.add_argument("--steps", type=int, default=REDUCED["steps_per_epoch"],
                   help="batches per epoch (64: one pass over the training z-scans)")
    p.add_argument("--residual", action=argparse.BooleanOptionalAction,
                   default=REDUCED["residual"], help="residual generators (x + net(x))")
    p.add_argument("--upsample", default=REDUCED["upsample"], choices=["transposed", "resize"],
                   help="decoder upsampling (notebook: transposed)")
    p.add_argument("--val-count", type=int, default=16, help="held-apart z-scans")
    p.add_argument("--lambda-cycle", type=float, default=10.5, help="cycle weight (paper 10.5)")
    p.add_argument("--lambda-identity", type=float, default=0.5, help="identity weight")
    p.add_argument("--lr-d", type=float, default=None,
                   help="discriminators' learning rate (default: the generators' 2e-4)")
    p.add_argument("--d-norm", default="instance", choices=["instance", "none"],
                   help="normalisation inside the discriminators (notebook: instance)")
    p.add_argument("--infocus-match", default="none", choices=["none", "focal"],
                   help="map the in-focus images onto the focal planes' histogram (notebook: none)")
    p.add_argument("--vertical-set", action="store_true",
                   help="use the notebook's vertical sections for D_S")
    p.add_argument("--device", default=None, help="cpu or cuda (default: GPU if present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    p.add_argument("--resume", action="store_true", help="continue OUT/run")
    a = p.parse_args(argv)

    import torch

    from sharpstack.methods.zsegan.bench import run_zsegan_bench

    torch.set_num_threads(a.threads)
    run_zsegan_bench(a.out, progress=True, crop=a.crop, ngf=a.ngf, n_res=a.res_blocks,
                     ndf=a.ndf, sections=a.sections, epochs=a.epochs, steps_per_epoch=a.steps,
                     val_count=a.val_count, lambda_identity=a.lambda_identity,
                     use_vertical=a.vertical_set, device=a.device, seed=a.seed,
                     residual=a.residual, upsample=a.upsample,
                     lambda_cycle=a.lambda_cycle,
                     extra={"d_norm": a.d_norm, "infocus_match": a.infocus_match,
                            **({"lr_d": a.lr_d} if a.lr_d else {})},
                     resume=a.resume)
    with open(f"{a.out}/tables.md", encoding="utf-8") as fh:
        print(fh.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
