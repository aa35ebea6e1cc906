#!/usr/bin/env python
"""Alignment accuracy on synthetic stacks with known motion (the README's Alignment table).

    python bench/alignment.py [--frames 20] [--size 320x240]

Per scene, a stack with 2 % breathing, +-5 px shifts and +-0.3 deg rotation and the same stack
without motion: the corner RMS error of the recovered transforms (px), the fused PSNR against
the truth of the moving stack with our estimates, with the true transforms (same warp: what
the resampling alone costs), unaligned, and of the still stack; and the largest composed
motion estimated on the still stack (before the identity snap) per model. ``--optics`` adds a
camera-like optical blur (sigma in px) to the scenes; ``--supersample 2`` renders them at twice
the resolution and averages each 2x2 block, as a sensor's pixels integrate light, so a moved
frame is sampled after the move (``python bench/alignment.py --supersample 2 --optics 0.5`` is
the camera-like configuration of the README).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCENES = [("astronaut", "mixed"), ("coffee", "steps"), ("immunohistochemistry", "mixed"), ("chelsea", "slope")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--size", default="320x240")
    p.add_argument("--optics", type=float, default=0.0)
    p.add_argument("--supersample", type=int, default=1)
    p.add_argument("--method", default="soft", choices=("soft", "pyramid", "depthmap"),
                   help="fusion method (the README's table was measured with pyramid, the default then)")
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))

    import gpustack
    from gpustack import metrics, synth
    from gpustack.backends.cpu import CpuBackend
    from gpustack.stages.align import _corner_motion, round_affine

    warnings.simplefilter("ignore")
    be = CpuBackend()
    print(f"{args.frames} frames of {w}x{h}, 2 % breathing, +-5 px, +-0.3 deg, optics {args.optics} px, "
          f"supersample {args.supersample}, default options (similarity), cpu")
    print("| scene / depth | corner RMS (px) | PSNR aligned | true transforms | unaligned | still stack | "
          "still: largest composed estimate (px) translation / similarity / affine |")
    print("|---|---|---|---|---|---|---|")
    for scene, depth in SCENES:
        kw = dict(scene=scene, depth=depth, n_frames=args.frames, shape=(h, w), seed=args.seed, optics=args.optics,
                  supersample=args.supersample)
        still = synth.make_stack(**kw)
        moving = synth.make_stack(**kw, breathing=0.02, shift=5.0, rotation=0.3)
        res = gpustack.stack(moving.frames, backend="cpu", method=args.method)
        r0, r1, c0, c1 = res.crop
        truth = metrics.srgb_encode(still.truth[r0:r1, c0:c1])

        def psnr(img, truth=truth):
            return metrics.psnr(metrics.srgb_encode(np.clip(img, 0, 1)), truth, crop=8)

        oracle_frames = []
        for k, f in enumerate(moving.frames):
            out = np.empty((f.shape[2],) + f.shape[:2], np.float32)
            be.warp(np.ascontiguousarray(f), None, round_affine(np.asarray(moving.transforms[k], float)[:2]),
                    np.ones(f.shape[2], np.float32), out)
            oracle_frames.append(np.ascontiguousarray(np.moveaxis(out, 0, -1)))
        oracle = gpustack.stack(oracle_frames, backend="cpu", method=args.method, align="none",
                                brightness=False)
        unaligned = gpustack.stack(moving.frames, backend="cpu", method=args.method, align="none")
        still_res = gpustack.stack(still.frames, backend="cpu", method=args.method)
        err = synth.corner_error(res.transforms, moving.transforms, moving.truth.shape)
        largest = []
        for model in ("translation", "similarity", "affine"):
            r = gpustack.stack(still.frames, backend="cpu", method=args.method, align=model)
            largest.append(max(_corner_motion(np.array(f.alignment["estimated"]), (h, w), 1)
                               for f in r.frames if f.alignment["estimated"] is not None))
        print(f"| {scene} / {depth} | {err:.3f} | {psnr(res.linear):.2f} | {psnr(oracle.linear[r0:r1, c0:c1]):.2f} | "
              f"{psnr(unaligned.linear[r0:r1, c0:c1]):.2f} | {psnr(still_res.linear[r0:r1, c0:c1]):.2f} | "
              + " / ".join(f"{v:.2f}" for v in largest) + " |")


if __name__ == "__main__":
    main()
