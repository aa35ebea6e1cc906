#!/usr/bin/env python
"""Soak: long stacks of 12 MP frames from files, through the command, as a user runs it.

    python bench/soak.py --frames 100,500,1000 [--size 4000x3000] [--dir /tmp/soak] [-- extra options]

Writes ``--distinct`` JPEG frames of ``--size`` (a synthetic focus stack, scaled up) and copies
them to as many files as the largest count needs (each a file of its own: the command refuses
one file given twice), then runs ``python -m gpustack stack FOLDER -o fused.tif --depth-map
depth.tif`` (supervised, default options: similarity alignment, brightness, pyramid) once per
count, each in a fresh process tree, and prints per count the time, frames/s, MP-frames/s and
the peak RSS of the process that did the work (the supervised child: the largest process of the
tree, ``getrusage(RUSAGE_CHILDREN)``), with the machine. Memory must be flat in the count.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def write_frames(folder: Path, count: int, size, distinct: int) -> list[Path]:
    """``count`` JPEG files of ``size`` (width, height): ``distinct`` frames of a synthetic stack,
    copied round robin. Kept between runs (same count, size and distinct)."""
    from PIL import Image
    from scipy.ndimage import zoom

    from gpustack import synth

    w, h = size
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{w}x{h}_{distinct}"
    sources = [folder / f"src_{tag}_{k}.jpg" for k in range(distinct)]
    if not all(p.exists() for p in sources):
        st = synth.make_stack(n_frames=distinct, shape=(h // 4, w // 4), seed=5)
        for k, frame in enumerate(st.as_uint16()):
            big = zoom((frame >> 8).astype(np.uint8), (4, 4, 1), order=1)[:h, :w]
            Image.fromarray(big).save(sources[k], quality=92)
    paths = []
    for i in range(count):
        path = folder / f"frame_{tag}_{i:05d}.jpg"
        if not path.exists():
            shutil.copyfile(sources[i % distinct], path)
        paths.append(path)
    return paths


def measure(cmd: list[str]) -> dict:
    """Run ``cmd`` in a fresh process; its time and the peak RSS of its largest process."""
    probe = [sys.executable, __file__, "--measure", "--", *cmd]
    res = subprocess.run(probe, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"measuring failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["--measure", "--"]:
        t0 = time.perf_counter()
        res = subprocess.run(argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - t0
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(json.dumps({"returncode": res.returncode, "seconds": seconds, "peak_rss_mb": peak_kb / 1024,
                          "stderr": res.stderr[-2000:]}))
        return 0
    extra = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default="100,500,1000", help="comma-separated frame counts, one run each")
    ap.add_argument("--size", default="4000x3000", help="frame size WxH (4000x3000: 12 MP)")
    ap.add_argument("--distinct", type=int, default=8, help="distinct frames (the rest are copies)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/gpustack-soak"), help="where frames and outputs go")
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.frames.split(",")]
    w, h = (int(v) for v in args.size.split("x"))
    t0 = time.perf_counter()
    paths = write_frames(args.dir / "frames", max(counts), (w, h), args.distinct)
    from throughput import machine

    print(f"machine: {json.dumps(machine('cpu'))}")
    print(f"{max(counts)} frames of {w}x{h} ({w * h / 1e6:.1f} MP, JPEG) ready in {time.perf_counter() - t0:.0f} s; "
          f"options: default{' ' + ' '.join(extra) if extra else ''}")
    print("| frames | time | frames/s | MP-frames/s | peak RSS |")
    print("|---|---|---|---|---|")
    env_python = [sys.executable, "-m", "gpustack", "stack"]
    for n in counts:
        folder = args.dir / f"run{n}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for p in paths[:n]:
            os.link(p, folder / p.name)  # one name per file in this run's folder
        out = args.dir / "out"
        out.mkdir(exist_ok=True)
        cmd = [*env_python, str(folder), "-o", str(out / "fused.tif"), "--depth-map", str(out / "depth.tif"),
               "--overwrite", *extra]
        r = measure(cmd)
        shutil.rmtree(folder, ignore_errors=True)
        if r["returncode"] != 0:
            print(f"| {n} | failed (exit {r['returncode']}): {r['stderr'].strip()[-300:]} |")
            continue
        fps = n / r["seconds"]
        print(f"| {n} | {r['seconds']:.0f} s | {fps:.2f} | {fps * w * h / 1e6:.1f} | {r['peak_rss_mb']:.0f} MB |",
              flush=True)
        print(json.dumps({"frames": n, "size": [w, h], **{k: v for k, v in r.items() if k != "stderr"}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
