#!/usr/bin/env python
"""Many stacks: a plain Python loop of ``gpustack.stack`` against ``gpustack batch`` on local Dask workers.

    python bench/batch.py --stacks 24 --frames 10 --size 1632x1224 --workers 1,2

Generates ``--stacks`` stacks of ``--frames`` TIFF frames (``gpustack.synth.make_bench_frames``, uint16 RGB;
1632x1224 is 2 MP), then runs each mode in a fresh process, outputs to a fresh folder:

- ``loop``: ``for folder in stacks: gpustack.stack(folder, output=..., maps=False)`` (the image only, as
  the batch writes it without map flags), the cores to Numba as usual;
- ``batch:N``: ``gpustack batch`` as the command runs it (a local cluster of N workers sized as
  ``gpustack.batching.cluster`` says: the cores shared out among them), cluster start-up included.

Prints per mode the wall time, stacks/min, MP-frames/s, the ratio to the loop, and the peak RSS (of the
loop's process; of each batch worker, and of the client); one JSON line per mode for tools. With
``--stacks 12,24`` every mode runs at each count (the workers' peak RSS must not grow with it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import machine


def make_stacks(root: Path, n: int, frames: int, size: tuple[int, int]) -> list[Path]:
    import tifffile

    from gpustack import synth

    folders = []
    for i in range(n):
        folder = root / f"slide{i // 8}" / f"fov_{i:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, frame in enumerate(synth.make_bench_frames(frames, (size[1], size[0]), seed=i)):
            tifffile.imwrite(folder / f"frame_{k:02d}.tif", frame)
        folders.append(folder)
    return folders


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_loop(root: Path, out: Path, options: dict) -> dict:
    import gpustack

    folders = sorted(p.parent for p in root.rglob("frame_00.tif"))
    t0 = time.perf_counter()
    for folder in folders:
        target = out / folder.relative_to(root).with_suffix(".tif")
        target.parent.mkdir(parents=True, exist_ok=True)
        gpustack.stack(folder, output=target, maps=False, **options)  # the image only, as the batch writes it
    return {"seconds": time.perf_counter() - t0, "stacks": len(folders), "peak_rss_mb": {"process": _peak_rss_mb()}}


def run_batch(root: Path, out: Path, options: dict, workers: int) -> dict:
    from gpustack.batching import Batch, jobs_of

    jobs = jobs_of(root)
    t0 = time.perf_counter()
    with Batch(jobs, out, n_workers=workers, **options) as run:
        records = list(run.run())
        rss = run.client.run(_peak_rss_mb)
        info = run.info.to_dict()
    seconds = time.perf_counter() - t0
    failed = [r for r in records if r.status != "done"]
    if failed:
        raise SystemExit(f"{len(failed)} stacks failed: {failed[0].error}")
    stack_seconds = sum(r.seconds for r in records)
    return {"seconds": seconds, "stacks": len(records), "cluster": info, "stack_seconds_sum": stack_seconds,
            "peak_rss_mb": {"client": _peak_rss_mb(), **{f"worker{i}": v for i, v in enumerate(rss.values())}}}


def child(args) -> None:
    options = {"backend": args.backend, "method": args.method}
    out = Path(args.out)
    if args.mode == "warm":
        import gpustack

        first = min(p.parent for p in Path(args.root).rglob("frame_00.tif"))
        gpustack.stack(first, **options)
        return
    result = run_loop(Path(args.root), out, options) if args.mode == "loop" else \
        run_batch(Path(args.root), out, options, int(args.mode.split(":")[1]))
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", default="24", help="stacks per run; a comma list runs each count")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--size", default="1632x1224", help="WIDTHxHEIGHT of a frame (1632x1224: 2 MP)")
    ap.add_argument("--workers", default="1,2", help="local batch workers to try, comma-separated")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--method", default="soft")
    ap.add_argument("--keep", default=None, help="folder for the generated stacks (kept; reused when present)")
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        return child(args)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    mp = size[0] * size[1] / 1e6
    print(json.dumps({"machine": machine(args.backend), "load_avg_1min": os.getloadavg()[0]}))
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gpustack-bench-batch-"))
    modes = ["loop"] + [f"batch:{w}" for w in args.workers.split(",")]
    try:
        for n in (int(v) for v in args.stacks.split(",")):
            root = base / f"stacks_{n}x{args.frames}x{args.size}"
            if not root.exists():
                make_stacks(root, n, args.frames, size)
            # warm-up: the kernels compiled into Numba's cache once, so that no mode pays for it
            subprocess.run([sys.executable, __file__, "--mode", "warm", "--root", str(root), "--out",
                            str(base / "warm"), "--backend", args.backend, "--method", args.method], check=True,
                           capture_output=True)
            loop_s = None
            for mode in modes:
                out = base / f"out_{n}_{mode.replace(':', '')}"
                shutil.rmtree(out, ignore_errors=True)
                res = subprocess.run([sys.executable, __file__, "--mode", mode, "--root", str(root), "--out", str(out),
                                      "--backend", args.backend, "--method", args.method],
                                     capture_output=True, text=True, check=False)
                if res.returncode != 0:
                    raise SystemExit(f"{mode} failed:\n{res.stderr[-2000:]}")
                r = json.loads(res.stdout.strip().splitlines()[-1])
                loop_s = r["seconds"] if mode == "loop" else loop_s
                r.update(mode=mode, frames=args.frames, megapixels=mp, load_avg_1min=os.getloadavg()[0],
                         stacks_per_min=60 * r["stacks"] / r["seconds"],
                         mp_frames_per_s=r["stacks"] * args.frames * mp / r["seconds"],
                         loop_over_this=loop_s / r["seconds"])
                rss = ", ".join(f"{k} {v:.0f}" for k, v in r["peak_rss_mb"].items())
                print(f"{n:3d} stacks  {mode:8s} {r['seconds']:7.1f} s  {r['stacks_per_min']:6.1f} stacks/min  "
                      f"{r['mp_frames_per_s']:6.1f} MP-frames/s  loop/this {r['loop_over_this']:.2f}  "
                      f"peak RSS MB: {rss}", flush=True)
                print(json.dumps(r), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
