#!/usr/bin/env python
"""Camera RAW throughput: unpacking, development, and the whole pipeline on Bayer DNGs.

    python bench/raw.py --frames 20 --size 6000x4000 [--backend cpu|cuda] [--dir /tmp/dngs]

Writes ``--frames`` synthetic 14-bit Bayer DNGs of ``--size`` (a few distinct mosaics,
cached in ``--dir``), then prints, with the machine:

* unpack only (``unpack_raw``: what the reader threads do), frames/s with 1, 2, ... threads
  and with a pool of processes (does LibRaw scale across threads in one process?);
* LibRaw's own development (``read_raw``: ``postprocess``) per frame, against our
  ``develop`` kernel on the chosen backend per frame (mosaic already in memory);
* the pipeline end to end (``gpustack.stack``, ``--align none``, so the figure is decode +
  develop + fuse) with ``raw_develop="backend"`` and with ``"libraw"``, frames/s and peak RSS,
  and its ratio to the unpack-only rate (the device should hide behind the decoding).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def make_dngs(folder: Path, n: int, size, distinct: int = 4) -> list[Path]:
    from dng import mosaic_from_linear, write_dng

    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    paths = [folder / f"f{w}x{h}_{k:04d}.dng" for k in range(n)]
    if all(p.exists() for p in paths):
        return paths  # cached: no generation (it would count in the peak RSS)
    rng = np.random.default_rng(0)
    small = rng.uniform(0.02, 0.9, (h // 16 + 1, w // 16 + 1, 3))
    base = np.repeat(np.repeat(small, 16, 0), 16, 1)[:h, :w]
    mosaics = [mosaic_from_linear(np.clip(base * (0.9 + 0.05 * k), 0, 1), "RGGB", black=512, white=16383)
               for k in range(distinct)]
    for k, p in enumerate(paths):
        if not p.exists():
            write_dng(p, mosaics[k % distinct], cfa="RGGB", black=512, white=16383, as_shot_neutral=(0.5, 1, 1 / 1.5))
    return paths


def _unpack(path):
    from gpustack.io.raw import unpack_raw

    return unpack_raw(path).mosaic.shape


def unpack_rate(paths, workers, processes=False) -> float:
    import multiprocessing

    pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if processes
            else ThreadPoolExecutor(workers))
    with pool:
        list(pool.map(_unpack, paths[:workers]))  # warm-up (imports, page cache)
        t0 = time.perf_counter()
        list(pool.map(_unpack, paths))
        return len(paths) / (time.perf_counter() - t0)


def develop_times(paths, backend_name, reps=3) -> dict:
    from gpustack.backends import get_backend
    from gpustack.io.raw import develop_params, read_raw, unpack_raw

    t0 = time.perf_counter()
    for p in paths[:reps]:
        read_raw(p)
    libraw = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for p in paths[:reps]:
        unpack_raw(p)
    unpack = (time.perf_counter() - t0) / reps
    be = get_backend(backend_name)
    raw = unpack_raw(paths[0])
    black, scale, matrix = develop_params(raw)
    h, w = raw.mosaic.shape
    src = be.to_device(raw.mosaic)
    dst = be.empty((3, h, w), np.float32)
    out = {"libraw_postprocess_s": libraw, "unpack_s": unpack}
    for method in ("rcd", "mhc", "bilinear"):
        be.develop(src, raw.cfa, black, scale, matrix, method, dst)  # warm-up / compile
        be.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            be.develop(src, raw.cfa, black, scale, matrix, method, dst)
        be.synchronize()
        out[f"develop_{method}_s"] = (time.perf_counter() - t0) / reps
    return out


def pipeline_rate(paths, backend, raw_develop, workers) -> dict:
    import gpustack

    gpustack.stack(paths[:2], backend=backend, align="none", raw_develop=raw_develop, workers=workers)  # warm-up
    t0 = time.perf_counter()
    res = gpustack.stack(paths, backend=backend, align="none", raw_develop=raw_develop, workers=workers)
    total = time.perf_counter() - t0
    return {"frames_per_s": len(paths) / total, "total_s": total, "backend": res.backend, "device": res.device,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--size", default="6000x4000")
    p.add_argument("--backend", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dir", default="/tmp/gpustack-bench-dng")
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--skip-libraw-pipeline", action="store_true")
    args = p.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    sys.path.insert(0, str(ROOT / "bench"))
    from throughput import machine

    paths = make_dngs(Path(args.dir), args.frames, size)
    mp = size[0] * size[1] / 1e6
    m = machine(args.backend)
    print(f"{args.frames} Bayer DNGs of {size[0]}x{size[1]} ({mp:.1f} MP), {m.get('gpu') or m['cpu']}, "
          f"{m['cores']} cores")
    rates = {}
    for k in sorted({1, 2, args.workers}):
        rates[f"threads_{k}"] = unpack_rate(paths, k)
        print(f"  unpack only, {k} thread(s):   {rates[f'threads_{k}']:7.2f} frames/s")
    rates["processes_2"] = unpack_rate(paths, 2, processes=True)
    print(f"  unpack only, 2 processes:    {rates['processes_2']:7.2f} frames/s")
    dev = develop_times(paths, args.backend)
    print(f"  per frame: LibRaw postprocess {dev['libraw_postprocess_s'] * 1000:7.1f} ms, unpack "
          f"{dev['unpack_s'] * 1000:6.1f} ms, our develop ({args.backend}) rcd {dev['develop_rcd_s'] * 1000:6.1f} ms, "
          f"mhc {dev['develop_mhc_s'] * 1000:6.1f} ms, bilinear {dev['develop_bilinear_s'] * 1000:6.1f} ms")
    ours = pipeline_rate(paths, args.backend, "backend", args.workers)
    best_unpack = max(v for k, v in rates.items() if k.startswith("threads"))
    print(f"  pipeline, our develop:       {ours['frames_per_s']:7.2f} frames/s "
          f"({100 * ours['frames_per_s'] / best_unpack:.0f} % of the unpack-only rate), "
          f"peak RSS {ours['peak_rss_mb']:.0f} MB")
    lib = None
    if not args.skip_libraw_pipeline:
        lib = pipeline_rate(paths, args.backend, "libraw", args.workers)
        print(f"  pipeline, LibRaw develop:    {lib['frames_per_s']:7.2f} frames/s")
    print("JSON " + json.dumps({"frames": args.frames, "size": size, "machine": m, "unpack": rates,
                                "per_frame": dev, "pipeline": ours, "pipeline_libraw": lib}))


if __name__ == "__main__":
    main()
