#!/usr/bin/env python
"""Throughput and peak memory of ``gpustack.stack``.

Synthetic frames (no decoding: the fusion alone, streamed one frame at a time):
    python bench/throughput.py --frames 30 --size 4000x3000 [--backend cpu|cuda] [--method soft|pyramid|depthmap]
A folder of files (decoding included, as the CLI runs it):
    python bench/throughput.py --folder examples/pcb
Several frame counts, each in a fresh process (peak RSS must be flat in the count):
    python bench/throughput.py --frames 30,120 --size 4000x3000

Prints frames/s, MP-frames/s, the time per frame and the peak RSS, with the
machine (CPU, cores, GPU name, driver and CuPy version when the cuda backend
runs), and one JSON line per run for tools.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def machine(backend: str) -> dict:
    info = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if backend == "cuda":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        info["driver"] = cupy.cuda.runtime.driverGetVersion()
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        info["cupy"] = cupy.__version__
    return info


def frame_pool(size, channels, dtype, count=4, seed=0):
    """A few distinct textured frames (a random pattern blurred by different amounts)."""
    from scipy.ndimage import uniform_filter

    w, h = size
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 1, (h // 8 + 1, w // 8 + 1, channels)).astype(np.float32)
    base = np.repeat(np.repeat(small, 8, 0), 8, 1)[:h, :w]
    base = base + 0.1 * rng.standard_normal(base.shape).astype(np.float32)
    pool = []
    for k in range(count):
        f = uniform_filter(base, size=(1 + 2 * k, 1 + 2 * k, 1)) if k else base
        f = np.clip(f, 0, 1)
        if dtype == np.float32:
            pool.append(np.ascontiguousarray(f, dtype=np.float32))
        else:
            top = np.iinfo(dtype).max
            pool.append(np.ascontiguousarray((f * top + 0.5).astype(dtype)))
    return pool


def run_once(args) -> dict:
    import gpustack

    opts = dict(backend=args.backend, method=args.method, workers=args.workers, align=args.align,
                queue_size=args.queue_size)
    t0 = time.perf_counter()
    if args.folder:
        res = gpustack.stack([args.folder], **opts)
        n = len(res.frames)
        h, w = res.depth.shape
    else:
        w, h = args.size
        pool = frame_pool(args.size, args.channels, np.dtype(args.dtype).type)
        # warm-up: JIT/kernel-cache load and first-touch costs are not throughput
        gpustack.stack([p[:256, :256] for p in pool[:2]], **opts)
        n = args.frames
        t0 = time.perf_counter()
        frames = (pool[k % len(pool)] for k in range(n))
        # depthmap reads the frames twice: a list; the one-pass methods take the one-shot iterator
        res = gpustack.stack(frames if args.method != "depthmap" else [pool[k % len(pool)] for k in range(n)], **opts)
    total = time.perf_counter() - t0
    mp = h * w / 1e6
    fuse = res.timings["fuse_s"]
    align = res.timings.get("align_s", 0.0)
    warped = sum(1 for f in res.frames if f.alignment and f.alignment["affine"] != [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return {
        "source": args.folder or f"synthetic {args.dtype} {args.channels}ch",
        "backend": res.backend, "device": res.device, "method": args.method,
        "frames": n, "width": w, "height": h, "megapixels": round(mp, 2),
        "total_s": round(total, 3), "fuse_s": round(fuse, 3),
        "frames_per_s": round(n / total, 3), "mp_frames_per_s": round(mp * n / total, 2),
        "fuse_s_per_frame": round(fuse / n, 4), "fuse_mp_frames_per_s": round(mp * n / fuse, 2),
        "align": args.align, "estimate_s_per_frame": round(align / n, 4), "warped_frames": warped,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": machine(res.backend),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", default="30", help="frame count, or a comma list (each run in a fresh process)")
    p.add_argument("--size", default="4000x3000", help="WxH of synthetic frames")
    p.add_argument("--channels", type=int, default=3, choices=(1, 3))
    p.add_argument("--dtype", default="uint16", choices=("uint8", "uint16", "float32"))
    p.add_argument("--folder", default=None, help="stack this folder of files instead (decoding included)")
    p.add_argument("--backend", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--method", default="soft", choices=("soft", "pyramid", "depthmap"))
    p.add_argument("--align", default="similarity", help="alignment model (none: the fusion alone)")
    p.add_argument("--queue-size", type=int, default=2)
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    args = p.parse_args(argv)
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    counts = [int(c) for c in str(args.frames).split(",")]
    if len(counts) > 1:
        for c in counts:
            cmd = [sys.executable, __file__, "--frames", str(c)] + [a for a in (argv or sys.argv[1:])
                                                                   if a not in ("--frames", args.frames)]
            subprocess.run(cmd, check=True)
        return
    args.frames = counts[0]
    r = run_once(args)
    m = r["machine"]
    where = m.get("gpu") or f"{m['cpu']}, {m['cores']} cores"
    print(f"{r['source']}: {r['frames']} frames of {r['width']}x{r['height']} ({r['megapixels']} MP), "
          f"{r['backend']} ({where}), {r['method']}")
    print(f"  end to end  {r['total_s']:8.2f} s   {r['frames_per_s']:7.2f} frames/s   {r['mp_frames_per_s']:8.1f} MP-frames/s")
    print(f"  fusion      {r['fuse_s']:8.2f} s   {r['fuse_s_per_frame'] * 1000:7.1f} ms/frame   "
          f"{r['fuse_mp_frames_per_s']:8.1f} MP-frames/s")
    print(f"  estimation  {r['estimate_s_per_frame'] * 1000:8.1f} ms/frame on the estimator thread "
          f"(align {r['align']}; {r['warped_frames']} frames warped)")
    print(f"  peak RSS    {r['peak_rss_mb']:8.0f} MB")
    print("JSON " + json.dumps(r))


if __name__ == "__main__":
    main()
