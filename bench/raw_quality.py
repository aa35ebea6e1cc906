#!/usr/bin/env python
"""Fused quality of camera RAW stacks against the synthetic truth (the README's Camera RAW table).

    python bench/raw_quality.py [--frames 6] [--size 256x192] [--optics 1.0]

Per scene: a synthetic stack with camera-like optics written as Bayer DNGs (tests/dng.py: a
14-bit camera with its own colour matrix, white balance and black level), fused with
``--align none`` after our development (rcd, mhc, bilinear) and after LibRaw's (AHD); and the
same frames fed as 16-bit TIFFs (three colours at every pixel). PSNR in dB against the truth
(sRGB, 16 px border off), the DNG columns relative to the TIFF one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SCENES = [("astronaut", "mixed"), ("coffee", "steps"), ("chelsea", "slope"), ("immunohistochemistry", "mixed"),
          ("rocket", "dome")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--size", default="256x192")
    p.add_argument("--optics", type=float, default=1.0)
    p.add_argument("--method", default="soft", choices=("soft", "pyramid", "depthmap"),
                   help="fusion method (the README's table was measured with pyramid, the default then)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))

    import gpustack
    from dng import write_dng_stack
    from gpustack import metrics, synth

    warnings.simplefilter("ignore")

    def psnr(res, truth):
        t = metrics.srgb_encode(truth)
        return metrics.psnr(metrics.srgb_encode(np.clip(res.linear, 0, 1)), t, crop=16)

    print(f"{args.frames} frames of {w}x{h}, optics {args.optics} px, --align none, cpu; dB against the truth")
    print("| scene / depth | TIFF | RCD | MHC | bilinear | LibRaw AHD |")
    print("|---|---|---|---|---|---|")
    for scene, depth in SCENES:
        st = synth.make_stack(scene=scene, depth=depth, n_frames=args.frames, shape=(h, w), seed=args.seed,
                              optics=args.optics)
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_dng_stack(st.frames, Path(tmp))
            opts = dict(backend="cpu", method=args.method, align="none")
            tiff = psnr(gpustack.stack(st.as_uint16(), **opts), st.truth)
            ours = [psnr(gpustack.stack(paths, demosaic=m, **opts), st.truth) - tiff for m in ("rcd", "mhc", "bilinear")]
            ahd = psnr(gpustack.stack(paths, raw_develop="libraw", **opts), st.truth) - tiff
        print(f"| {scene} / {depth} | {tiff:.2f} | " + " | ".join(f"{v:+.2f}" for v in (*ours, ahd)) + " |")


if __name__ == "__main__":
    main()
