#!/usr/bin/env python
"""Microscopy z-stacks: speed and memory per channel, and the height-map error against the truth.

    python bench/microscopy.py --channels 1,2,4,8 --size 2048x2048 --planes 10 [--backend cpu|cuda]
    python bench/microscopy.py --accuracy            # height-map error in microns, synthetic stacks

Speed: 16-bit (12-bit samples) linear z-stacks from memory (``gpustack.io.ome.array_sources``: no
decoding, ``--align none`` as on a microscope stage), the default fusion with every channel from
the same planes, and ``--per-channel``; each count in a fresh process (its peak RSS), and the
device memory estimate of the stack (``stages.footprint``, which tests/test_footprint.py tracks
against real allocations). Prints one table row per run and a JSON line for tools, with the machine.

Accuracy: ``synth.make_microscopy_stack`` (DAPI nuclei on a tilted or curved surface, GFP fibres
6 µm above), the height map's median and 95th-percentile error in microns on its confident pixels,
with the focus on DAPI and per channel, at two z-samplings.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import machine  # noqa: E402


def one_run(args) -> dict:
    import gpustack
    from gpustack.io.ome import array_sources
    from gpustack.stages.footprint import stack_footprint
    from gpustack.stages.fuse import check_levels

    w, h = map(int, args.size.split("x"))
    rng = np.random.default_rng(0)
    base = rng.integers(100, 4096, (args.channels, h, w), dtype=np.uint16)
    planes = np.stack([np.roll(base, k, axis=-1) for k in range(args.planes)])  # distinct planes, no decoding
    sources = array_sources(planes, z_step=2.0, pixel_size=(0.5, 0.5), name="bench")
    opts = {"backend": args.backend, "align": "none", "per_channel": args.per_channel}
    gpustack.stack(sources[:2], **opts)  # warm-up: Numba compilation / NVRTC cache
    t0 = time.perf_counter()
    result = gpustack.stack(sources, **opts)
    seconds = time.perf_counter() - t0
    fp = stack_footprint(args.channels, h, w, check_levels(h, w, None), frame_bytes=planes[0].nbytes, moved=False,
                         per_channel=args.per_channel, height_map=True)
    mp = h * w / 1e6
    return {"channels": args.channels, "per_channel": args.per_channel, "size": args.size, "planes": args.planes,
            "backend": result.backend, "seconds": round(seconds, 3),
            "ms_per_plane": round(1000 * seconds / args.planes, 1),
            "ms_per_plane_per_channel": round(1000 * seconds / args.planes / args.channels, 1),
            "mp_planes_per_s": round(mp * args.planes / seconds, 1),
            "estimate_mb": round(fp.peak / 1e6), "estimate_bytes_per_pixel_per_channel":
                round(fp.peak / (h * w) / args.channels, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def accuracy() -> None:
    import gpustack
    from gpustack import synth

    print("| surface | blur per µm | mode | channel | median error (µm) | 95th pct (µm) | confident | z-step |")
    print("|---|---|---|---|---|---|---|---|")
    tmp = Path("/tmp/gpustack-bench-microscopy")
    tmp.mkdir(exist_ok=True)
    for surface in ("tilted", "curved"):
        for blur in (0.3, 0.6):
            st = synth.make_microscopy_stack(surface=surface, blur_per_um=blur, seed=1)
            path = st.write_ome(tmp / f"{surface}-{blur}.ome.tif")
            for mode, opts in (("focus DAPI", {"focus_channel": "DAPI"}), ("per channel", {"per_channel": True})):
                r = gpustack.stack(path, backend="cpu", align="none", **opts)
                heights = r.height if r.height.ndim == 3 else r.height[None]
                for c, height in enumerate(heights):
                    ok = ~np.isnan(height)
                    err = np.abs(height - st.height[c])[ok]
                    print(f"| {surface} | {blur} | {mode} | {st.channel_names[c]} | {np.median(err):.3f} | "
                          f"{np.percentile(err, 95):.3f} | {ok.mean():.0%} | {st.z_step:g} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", default="1,2,4,8")
    p.add_argument("--size", default="2048x2048")
    p.add_argument("--planes", type=int, default=10)
    p.add_argument("--backend", default="cpu")
    p.add_argument("--per-channel", action="store_true")
    p.add_argument("--both", action="store_true", help="each count with and without --per-channel")
    p.add_argument("--accuracy", action="store_true")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.accuracy:
        accuracy()
        return
    if args.one:
        args.channels = int(args.channels)
        print(json.dumps(one_run(args)))
        return
    print(json.dumps({"machine": machine(args.backend)}))
    print("| channels | per channel | ms per plane | ms per plane per channel | MP-planes/s | device estimate (MB) "
          "| bytes/px/channel | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for c in args.channels.split(","):
        for per in ([False, True] if args.both else [args.per_channel]):
            if per and c == "1":
                continue
            cmd = [sys.executable, __file__, "--one", "--channels", c, "--size", args.size, "--planes",
                   str(args.planes), "--backend", args.backend] + (["--per-channel"] if per else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            print(f"| {r['channels']} | {'yes' if per else 'no'} | {r['ms_per_plane']} | {r['ms_per_plane_per_channel']} "
                  f"| {r['mp_planes_per_s']} | {r['estimate_mb']} | {r['estimate_bytes_per_pixel_per_channel']} "
                  f"| {r['peak_rss_mb']} |")
            print(json.dumps(r), file=sys.stderr)


if __name__ == "__main__":
    main()
