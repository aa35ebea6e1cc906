#!/usr/bin/env python
"""Quality of the fusion on synthetic stacks with known truth (gpustack.synth).

For each scene and depth map: PSNR and SSIM against the all-in-focus truth
(sRGB-encoded, central crop), PSNR in a band of 10 px on each side of the depth
edges (where halos live), and the depth map's mean absolute error in frames on
textured pixels, for gpustack's two methods and two baselines: the naive
per-pixel max-|Laplacian| pick, and the mean of the frames.

    python bench/quality.py [--frames 12] [--size 384x512] [--backend cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gpustack  # noqa: E402
from gpustack import metrics, synth  # noqa: E402

CASES = [("astronaut", "mixed"), ("coffee", "steps"), ("chelsea", "slope"), ("rocket", "dome"),
         ("immunohistochemistry", "mixed")]
CROP = 16


def _edges(img, truth, edges):
    """PSNR in the band around depth edges (nan for a depth map without edges)."""
    if not edges[CROP:-CROP, CROP:-CROP].any():
        return float("nan")
    return metrics.psnr(img, truth, mask=edges, crop=CROP)


def evaluate(scene, depth, *, n_frames, shape, backend, seed=0, **options) -> dict:
    st = synth.make_stack(scene=scene, depth=depth, n_frames=n_frames, shape=shape, seed=seed)
    truth = metrics.srgb_encode(st.truth)
    textured = metrics.textured_mask(st.truth)
    rows = {}
    for method in ("pyramid", "depthmap"):
        res = gpustack.stack(st.frames, backend=backend, method=method, **options)
        img = metrics.srgb_encode(np.clip(res.linear, 0, 1))
        # default options align (similarity): on these motionless stacks the estimator's residual
        # can pass the snap threshold and crop a pixel or two; compare on the part kept
        r0, r1, c0, c1 = res.crop or (0, truth.shape[0], 0, truth.shape[1])
        cut = (slice(r0, r1), slice(c0, c1))
        rows[method] = {
            "psnr": metrics.psnr(img, truth[cut], crop=CROP), "ssim": metrics.ssim(img, truth[cut], crop=CROP),
            "psnr_edges": _edges(img, truth[cut], st.edges[cut]),
            "depth_mae": metrics.depth_mae(res.depth, st.depth[cut], mask=textured[cut], crop=CROP),
            "depth_raw_mae": metrics.depth_mae(res.depth_raw, st.depth[cut], mask=textured[cut], crop=CROP),
            "crop": res.crop,
        }
    for name, fn in (("naive", metrics.naive_fusion), ("mean", metrics.mean_fusion)):
        img = metrics.srgb_encode(np.clip(fn(st.frames), 0, 1))
        rows[name] = {"psnr": metrics.psnr(img, truth, crop=CROP), "ssim": metrics.ssim(img, truth, crop=CROP),
                      "psnr_edges": _edges(img, truth, st.edges)}
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--size", default="384x512", help="HxW")
    p.add_argument("--backend", default="cpu")
    args = p.parse_args(argv)
    shape = tuple(int(v) for v in args.size.split("x"))
    print(f"{args.frames} frames of {shape[1]}x{shape[0]}, central crop (-{CROP} px), sRGB-encoded; "
          "PSNR/SSIM vs truth, PSNR in the +-10 px band around depth edges, depth MAE (frames) on textured pixels")
    print(f"{'scene/depth':30s} {'method':9s} {'PSNR':>6s} {'SSIM':>6s} {'edges':>6s} {'MAE':>5s} {'MAEraw':>6s}")
    out = {}
    for scene, depth in CASES:
        rows = evaluate(scene, depth, n_frames=args.frames, shape=shape, backend=args.backend)
        out[f"{scene}/{depth}"] = rows
        for method, r in rows.items():
            mae = f"{r['depth_mae']:5.2f} {r['depth_raw_mae']:6.2f}" if "depth_mae" in r else ""
            print(f"{scene + '/' + depth:30s} {method:9s} {r['psnr']:6.2f} {r['ssim']:6.3f} {r['psnr_edges']:6.2f} {mae}")
    print("JSON " + json.dumps(out))


if __name__ == "__main__":
    main()
