#!/usr/bin/env python
"""gpustack beside the CPU peers, on one stack of 16-bit TIFF files, in one run (issue 14's table).

    python bench/peers.py                              # 40 frames of 12 MP (4000x3000), 1 % breathing
    python bench/peers.py --frames 10 --mp 3 --repeat 1   # a quick look
    python bench/peers.py --runs default,fw --repeat 3    # only some of the runs, alternated

Writes the stack once (``--data``, default ``$TMPDIR/gpustack-peers``; kept between runs): a
synthetic focus stack (``gpustack.synth``, ``--breathing`` focus breathing, about the middle frame)
rendered at a quarter of the size per side and scaled up 4x in linear light, then given sensor
noise at full size, sRGB-encoded to 16 bits and written as uncompressed TIFF (the generator
renders every frame of a stack at once: at 12 MP that would take 16 GB and many minutes). Then runs,
each as the command a user types, in a fresh process:

* ``default``: ``gpustack stack FOLDER -o OUT`` (the CPU backend, every option at its default);
* ``noalign``: the same with ``--align none`` (the fusion alone);
* ``depthmap``: the same with ``--method depthmap``;
* ``fw``: focusweave (``focusweave FOLDER --output OUT.tif``), from ``--focusweave`` (default: on
  the PATH, else ``/tmp/peers-venv/bin/focusweave``; ``pip install focusweave`` in a venv of its
  own, never in gpustack's);
* ``fs``: focus-stack (``focus-stack --output=OUT.tif FILES``), if a binary is found.

A peer that is not installed is reported as missing, not an error. Each run is repeated
``--repeat`` times, the runs alternated (a round of every run, then the next round), so that a
change in the machine's other load spreads over all of them. Before the first round every gpustack
run stacks the first 3 frames cropped to 512x384, so its Numba kernels are compiled and cached
(the table is the warm second run; ``bench/`` does not time the first run).

Prints per run the wall time of each round, the best and median, the ratio of the median to
focusweave's median (same rounds), the peak RSS of the process tree (the sum over the command's
process and its children, polled every 20 ms with psutil), the SHA-256 of gpustack's output
(the same bytes from every change that must not change them), the machine and the load average
before and after; one JSON line for tools. Not part of the test suite (``testpaths`` is
``tests``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RUNS = ("default", "noalign", "depthmap", "fw", "fs")
GPUSTACK_ARGS = {"default": [], "noalign": ["--align", "none"], "depthmap": ["--method", "depthmap"]}
RENDER_SCALE = 4  # the stack is rendered at 1/4 of the size per side, then scaled up


def frame_size(mp: float) -> tuple[int, int]:
    """(width, height) of about ``mp`` megapixels at 4:3, both multiples of RENDER_SCALE."""
    h = int(round((mp * 1e6 * 3 / 4) ** 0.5 / RENDER_SCALE)) * RENDER_SCALE
    return h * 4 // 3 // RENDER_SCALE * RENDER_SCALE, h


def write_stack(folder: Path, frames: int, size, breathing: float, seed: int = 0) -> list[Path]:
    """The stack's TIFF files in ``folder`` (written unless all are there)."""
    import tifffile
    from scipy.ndimage import zoom

    from gpustack import synth
    from gpustack.metrics import srgb_encode

    w, h = size
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"frame_{k:03d}.tif" for k in range(frames)]
    if all(p.exists() for p in paths):
        return paths
    t0 = time.perf_counter()
    print(f"writing {frames} frames of {w}x{h} to {folder} ...", flush=True)
    st = synth.make_stack(n_frames=frames, shape=(h // RENDER_SCALE, w // RENDER_SCALE), breathing=breathing,
                          noise=False, seed=seed)
    rng = np.random.default_rng(seed)
    gain, read_noise = synth.DEFAULT_GAIN, synth.DEFAULT_READ_NOISE
    for k, small in enumerate(st.frames):
        x = zoom(small, (RENDER_SCALE, RENDER_SCALE, 1), order=1)[:h, :w]
        np.clip(x, 0.0, 1.0, out=x)
        sd = x / np.float32(gain)
        sd += np.float32(read_noise) ** 2
        np.sqrt(sd, out=sd)
        sd *= rng.standard_normal(x.shape, dtype=np.float32)
        x += sd
        del sd
        np.clip(x, 0.0, 1.0, out=x)
        out = np.rint(srgb_encode(x).astype(np.float64) * 65535.0).astype(np.uint16)
        tifffile.imwrite(paths[k].with_suffix(".part"), out, photometric="rgb")
        paths[k].with_suffix(".part").rename(paths[k])
        st.frames[k] = None
    print(f"  written in {time.perf_counter() - t0:.0f} s", flush=True)
    return paths


def write_warmup(folder: Path, stack: list[Path]) -> Path:
    """The first 3 frames cropped to 512x384: a stack that compiles every kernel the runs need."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    for k, p in enumerate(stack[:3]):
        out = folder / f"w_{k}.tif"
        if not out.exists():
            tifffile.imwrite(out, tifffile.imread(p)[:384, :512], photometric="rgb")
    return folder


def measure(cmd: list[str], env=None, cwd=None, poll: float = 0.02) -> dict:
    """Wall time, CPU time, exit status and peak RSS of the process tree of ``cmd``, run in ``cwd`` (not
    a source tree: ``python -m`` puts the working folder first on the module path)."""
    import psutil

    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            procs = [ps] + ps.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        peak = max(peak, total)
        time.sleep(poll)
    err = proc.stderr.read().decode(errors="replace")
    proc.wait()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, "rc": proc.returncode, "peak_rss_mb": peak / 2**20, "stderr": err[-2000:]}


def find_focusweave(given: str | None) -> str | None:
    for cand in (given, shutil.which("focusweave"), "/tmp/peers-venv/bin/focusweave"):
        if cand and Path(cand).exists():
            return cand
    return None


def find_focus_stack(given: str | None) -> str | None:
    for cand in (given, shutil.which("focus-stack")):
        if cand and Path(cand).exists():
            return cand
    return None


def commands(run: str, folder: Path, files: list[Path], out: Path, args) -> list[str] | None:
    if run in GPUSTACK_ARGS:
        return [sys.executable, "-m", "gpustack", "stack", str(folder), "-o", str(out), "--overwrite",
                "--backend", "cpu", *GPUSTACK_ARGS[run]]
    if run == "fw":
        exe = find_focusweave(args.focusweave)
        return None if exe is None else [exe, str(folder), "--output", str(out)]
    if run == "fs":
        exe = find_focus_stack(args.focus_stack)
        return None if exe is None else [exe, f"--output={out}", *map(str, files)]
    raise ValueError(run)


def machine() -> dict:
    from throughput import machine as cpu_machine

    info = cpu_machine("cpu")
    try:
        with open("/proc/meminfo") as f:
            info["mem_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--mp", type=float, default=12.0, help="frame size in megapixels (4:3; 12: 4000x3000)")
    p.add_argument("--breathing", type=float, default=0.01, help="focus breathing across the stack (0.01: 1 %%)")
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "gpustack-peers",
                   help="where the stack is written and kept")
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma list of {', '.join(RUNS)}")
    p.add_argument("--repeat", type=int, default=2, help="rounds of every run, alternated")
    p.add_argument("--focusweave", default=None, help="focusweave executable")
    p.add_argument("--focus-stack", default=None, help="focus-stack executable")
    p.add_argument("--no-warmup", action="store_true", help="time gpustack's first run too")
    p.add_argument("--baseline", type=Path, default=None,
                   help="another gpustack source tree (e.g. a git archive of main): its runs are "
                        "added, as RUN@base, alternated with this checkout's")
    args = p.parse_args(argv)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    for r in runs:
        if r not in RUNS:
            p.error(f"unknown run {r!r}; choose from {', '.join(RUNS)}")

    w, h = frame_size(args.mp)
    folder = args.data / f"stack_{args.frames}x{w}x{h}_b{args.breathing:g}"
    files = write_stack(folder, args.frames, (w, h), args.breathing)
    outdir = args.data / "out"
    outdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    plans, envs = {}, {}
    for r in runs:
        cmd = commands(r, folder, files, outdir / f"{r}.tif", args)
        if cmd is None:
            why = ("focusweave: pip install focusweave in a venv of its own, or --focusweave" if r == "fw"
                   else "focus-stack: no binary on the PATH; --focus-stack")
            print(f"{r}: missing ({why}); skipped")
            continue
        plans[r], envs[r] = cmd, env
        if args.baseline is not None and r in GPUSTACK_ARGS:
            plans[f"{r}@base"] = commands(r, folder, files, outdir / f"{r}@base.tif", args)
            envs[f"{r}@base"] = dict(env, PYTHONPATH=str(args.baseline.resolve()))
    if not args.no_warmup and any(r in GPUSTACK_ARGS for r in plans):
        warm = write_warmup(args.data / "warmup", files)
        for r in plans:
            base = r.split("@")[0]
            if base in GPUSTACK_ARGS:
                m = measure(commands(base, warm, [], outdir / f"warm_{r}.tif", args), env=envs[r], cwd=outdir)
                if m["rc"]:
                    print(f"{r}: warm-up failed (exit {m['rc']}):\n{m['stderr']}")
                    return 1

    load0 = os.getloadavg()
    results = {r: [] for r in plans}
    for k in range(args.repeat):
        for r, cmd in plans.items():
            m = measure(cmd, env=envs[r], cwd=outdir)
            m["sha256"] = None
            if m["rc"]:
                print(f"{r}: exit {m['rc']}\n{m['stderr']}")
            elif r.split("@")[0] in GPUSTACK_ARGS:
                m["sha256"] = sha256(outdir / f"{r}.tif")
            m.pop("stderr")
            results[r].append(m)
            print(f"  round {k + 1} {r:14s} {m['wall_s']:7.2f} s wall {m['cpu_s']:7.2f} s CPU "
                  f"{m['peak_rss_mb']:6.0f} MB", flush=True)
    load1 = os.getloadavg()

    mach = machine()
    print(f"\n{args.frames} frames of {w}x{h} ({w * h / 1e6:.1f} MP) 16-bit TIFF, {args.breathing * 100:g} % "
          f"breathing; "
          f"{mach['cpu']}, {mach['cores']} cores; load average {load0[0]:.2f} before, {load1[0]:.2f} after")
    ok = {r: [m for m in ms if m["rc"] == 0] for r, ms in results.items()}
    fw = statistics.median(m["wall_s"] for m in ok["fw"]) if ok.get("fw") else None
    names = {"default": "gpustack, default options", "noalign": "gpustack --align none",
             "depthmap": "gpustack --method depthmap", "fw": "focusweave", "fs": "focus-stack"}
    print(f"| {'tool':28s} | wall s (rounds)          | median | vs focusweave | CPU s | peak RSS MB | output sha256 |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for r, ms in ok.items():
        base, _, tag = r.partition("@")
        name = names[base] + (f" ({tag})" if tag else "")
        if not ms:
            print(f"| {name:28s} | failed |")
            continue
        walls = [m["wall_s"] for m in ms]
        med = statistics.median(walls)
        ratio = f"{med / fw:.2f}x" if fw else "-"
        rss = max(m["peak_rss_mb"] for m in ms)
        shas = sorted({m["sha256"] for m in ms if m["sha256"]})
        cpu = statistics.median(m["cpu_s"] for m in ms)
        print(f"| {name:28s} | {' '.join(f'{t:.2f}' for t in walls):24s} | {med:6.2f} | {ratio:>13s} | {cpu:5.1f} | "
              f"{rss:11.0f} | {','.join(shas) or '-'} |")
        summary[r] = {"walls": [round(t, 3) for t in walls], "median_s": round(med, 3),
                      "vs_focusweave": None if not fw else round(med / fw, 3), "cpu_s": round(cpu, 2),
                      "peak_rss_mb": round(rss),
                      "sha256": shas}
    for r in RUNS:
        if r in runs and r not in plans:
            print(f"| {names[r]:28s} | missing |")
    print("JSON " + json.dumps({"frames": args.frames, "width": w, "height": h, "breathing": args.breathing,
                               "machine": mach, "load": [round(load0[0], 2), round(load1[0], 2)],
                               "runs": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
