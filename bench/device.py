#!/usr/bin/env python
"""The backend's own work per frame, without the host: per-op times and the fold in MP-frames/s.

    python bench/device.py --backend cuda --size 6000x4000 [--frames 40] [--out DIR]
    python bench/device.py --backend cpu --size 4000x3000 --frames 4      (the same figures on the CPU)

The frames are uploaded once, before the clock starts, so what is measured is the
device part of a stack (the target of the CUDA backend: >= 4,000 MP-frames/s on an
H100/H200, a 24 MP RGB frame folded in <= 6 ms):

* ``ops``: each backend op on a full-size frame, mean of ``--reps`` runs;
* ``fold``: per frame, the frame brought into the fusion's input and folded into the
  state, for a still uint16 frame (convert), a moving one (bicubic warp) and a Bayer
  mosaic developed by RCD and then warped (a moving RAW frame);
* ``upload``: ``to_device`` of a uint16 RGB frame and of a mosaic from pageable host
  memory (through the pinned staging slots), the host-to-device rate.

On the cuda backend the times are CUDA events recorded on the backend's stream (device
time, the host's launch overhead hidden when it is shorter); on the cpu backend wall-clock
time. Prints a table and writes ``device.json`` (with the machine) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SIMILARITY = np.array([[1.001, -0.0005, 2.25], [0.0005, 1.001, -1.75]])


class Clock:
    """Elapsed seconds of the work queued between ``start`` and ``stop`` on backend ``be``."""

    def __init__(self, be):
        self.be = be
        self.cuda = be.name == "cuda"
        if self.cuda:
            import cupy

            self._events = (cupy.cuda.Event(), cupy.cuda.Event())

    def start(self):
        self.be.synchronize()
        if self.cuda:
            self._events[0].record(self.be.stream)
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            import cupy

            self._events[1].record(self.be.stream)
            self._events[1].synchronize()
            return cupy.cuda.get_elapsed_time(*self._events) / 1e3
        self.be.synchronize()
        return time.perf_counter() - self._t0


def timed(clock, fn, reps: int) -> float:
    """Mean seconds of ``fn()`` over ``reps`` runs, after one warm-up run."""
    fn()
    clock.start()
    for _ in range(reps):
        fn()
    return clock.stop() / reps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--size", default="6000x4000", help="WxH of the frames (default 6000x4000, 24 MP)")
    ap.add_argument("--frames", type=int, default=40, help="frames folded per variant")
    ap.add_argument("--reps", type=int, default=None, help="runs per op (default 20 on cuda, 2 on cpu)")
    ap.add_argument("--out", type=Path, default=None, help="folder for device.json")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    reps = args.reps or (20 if args.backend == "cuda" else 2)

    from throughput import machine

    from gpustack.backends import get_backend
    from gpustack.color import decode_lut, encode_lut
    from gpustack.stages.fuse import PyramidFusion, auto_levels

    be = get_backend(args.backend)
    clock = Clock(be)
    rng = np.random.default_rng(0)
    c, mp = 3, w * h / 1e6
    host_frames = [rng.integers(0, 65536, (h, w, c), dtype=np.uint16) for _ in range(2)]
    host_mosaic = rng.integers(512, 16383, (h, w), dtype=np.uint16)
    frames = [be.to_device(f) for f in host_frames]
    mosaic = be.to_device(host_mosaic)
    lut = be.to_device(decode_lut(np.uint16, "srgb"))
    elut = be.to_device(encode_lut(16, "srgb"))
    planar = be.to_device(rng.uniform(0, 1, (c, h, w)).astype(np.float32))
    developed = be.empty((c, h, w), np.float32)
    coarse = be.to_device(rng.uniform(0, 1, (c, (h + 1) // 2, (w + 1) // 2)).astype(np.float32))
    plane = be.to_device(rng.uniform(0, 1, (h, w)).astype(np.float32))
    out_plane = be.empty((h, w), np.float32)
    encoded = be.empty((h, w, c), np.uint16)
    ones = np.ones(c, np.float32)
    cfa = np.array([[0, 1], [1, 2]], np.int8)
    black = np.full((2, 2), 512, np.float32)
    scale = np.full((2, 2), 1 / 15871, np.float32)
    matrix = np.eye(3, dtype=np.float32)
    levels = auto_levels(h, w)

    ops = {
        "convert": lambda: be.convert(frames[0], lut, planar),
        "warp (uint16, bicubic)": lambda: be.warp(frames[0], lut, SIMILARITY, ones, planar),
        "warp_planar": lambda: be.warp_planar(developed, SIMILARITY, ones, planar),
        "develop rcd": lambda: be.develop(mosaic, cfa, black, scale, matrix, "rcd", developed),
        "develop mhc": lambda: be.develop(mosaic, cfa, black, scale, matrix, "mhc", developed),
        "pyramid_reduce": lambda: be.pyramid_reduce(planar, coarse),
        "pyramid_expand_sub": lambda: be.pyramid_expand_sub(planar, coarse),
        "fuse_sqsum": lambda: be.fuse_sqsum(planar, out_plane),
        "filter_box_rows r2": lambda: be.filter_box_rows(plane, out_plane, 2),
        "filter_box_cols r2": lambda: be.filter_box_cols(plane, out_plane, 2),
        "encode": lambda: be.encode(planar, elut, encoded),
    }
    results = {"backend": be.name, "device": getattr(be, "device_name", ""), "machine": machine(be.name),
               "size": [w, h], "megapixels": mp, "levels": levels, "ops_ms": {}, "fold": {}, "upload": {}}
    for name, fn in ops.items():
        results["ops_ms"][name] = 1e3 * timed(clock, fn, reps)
        print(f"{name:24s} {results['ops_ms'][name]:9.3f} ms", flush=True)

    variants = {
        "still uint16 (convert + fold)": lambda f, k: be.convert(frames[k % 2], lut, f.input),
        "moving uint16 (warp + fold)": lambda f, k: be.warp(frames[k % 2], lut, SIMILARITY, ones, f.input),
        "moving RAW (develop rcd + warp + fold)": lambda f, k: (
            be.develop(mosaic, cfa, black, scale, matrix, "rcd", developed),
            be.warp_planar(developed, SIMILARITY, ones, f.input)),
    }
    for name, bring in variants.items():
        fusion = PyramidFusion(be, c, h, w, levels=levels, energy_radius=2, depth_radius=4)
        bring(fusion, 0)
        fusion.fold(0)  # warm-up (and the chain's first frame)
        clock.start()
        for k in range(1, args.frames + 1):
            bring(fusion, k)
            fusion.fold(k)
        seconds = clock.stop() / args.frames
        results["fold"][name] = {"ms_per_frame": 1e3 * seconds, "mp_frames_per_s": mp / seconds}
        print(f"{name:40s} {1e3 * seconds:8.2f} ms/frame {mp / seconds:9.0f} MP-frames/s", flush=True)
        del fusion

    for name, host in (("uint16 RGB frame", host_frames[1]), ("Bayer mosaic", host_mosaic)):
        def upload(host=host):
            be.to_device(host)
        start = time.perf_counter()
        n = max(3, reps // 2)
        for _ in range(n):
            upload()
        be.synchronize()
        seconds = (time.perf_counter() - start) / n
        results["upload"][name] = {"ms": 1e3 * seconds, "gb_per_s": host.nbytes / seconds / 1e9}
        print(f"upload {name:33s} {1e3 * seconds:8.2f} ms {host.nbytes / seconds / 1e9:6.1f} GB/s (wall, host copy "
              f"included)", flush=True)

    print(json.dumps(results))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "device.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
