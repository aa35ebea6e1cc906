#!/usr/bin/env python
"""The first run on a fresh install (issue 14): the README's command with an empty Numba cache.

    python bench/cold.py                     # 3 rounds: a cold run, then a warm run, each round
    python bench/cold.py --rounds 5 --venv   # the cold run from a fresh virtual environment
    python bench/cold.py --folder my/stack --args "--method pyramid"
    python bench/cold.py --rounds 3 --baseline ../base   # and another checkout, alternated, as ratios

Each round runs ``python -m gpustack stack FOLDER -o fused.tif --depth-map depth.tif`` (the
README's first command; ``examples/pcb``, 7 JPEGs of 3 MP, by default) twice, each time in a fresh
process, exactly as a user types it (the supervised child included):

* **cold**: with a new, empty Numba cache, so every kernel the run needs is compiled;
* **warm**: the same command again, with the cache the cold run left.

Where the empty cache comes from:

* by default, ``NUMBA_CACHE_DIR`` points at a new empty folder (Numba then caches nowhere else),
  and the package is the one this script sits in. Nothing is copied or installed, so it runs
  anywhere in a second; what it does not reproduce of a fresh install is Python's bytecode cache
  (``__pycache__`` of gpustack and its dependencies is warm), which a real install writes at
  install time anyway (pip compiles ``.pyc`` files), so the first run does not pay for it either;
* ``--venv``: a new virtual environment per round (``python -m venv --without-pip``) whose
  site-packages gets a fresh copy of the ``gpustack`` package, byte-compiled as pip does, and a
  ``.pth`` line to this interpreter's site-packages for the dependencies (nothing is downloaded:
  the machine may have no network, and the dependencies' install is not what a user waits for
  when the command runs). ``NUMBA_CACHE_DIR`` and ``PYTHONPATH`` are unset, so Numba caches beside
  the installed package as it does for a user: the whole fresh-install path.

``--baseline TREE`` runs each round in a second tree too (another checkout, e.g. ``git worktree add
--detach ../base COMMIT``; its package is run, this script's procedure is used for both), the two in
alternating order round by round, and prints the paired ratios (this tree's time over the
baseline's, round by round, and their median): on a shared machine whose speed wanders by tens of
percent within an hour, a ratio measured minutes apart is what carries over from one machine to
another. A baseline of the tree an issue's figures were measured with translates its absolute
targets to this machine.

Prints per round the wall time and the CPU seconds (user + system of the whole process tree:
steadier than the wall time on a shared machine, and what compiling costs), the ratios
cold/warm, the load average before and after, the machine, whether the cold and warm outputs are
the same bytes, and one JSON line for tools. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from throughput import machine


def timed(cmd: list[str], env: dict, cwd: Path) -> dict:
    """Wall seconds and CPU seconds (user + system, the process and every descendant it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"bench/cold.py: {' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}


def fresh_venv(where: Path, tree: Path = ROOT) -> Path:
    """A new venv holding a fresh copy of ``tree``'s gpustack package (byte-compiled, as pip installs
    it), its dependencies reached through a .pth line to this interpreter's site-packages; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    deps = sysconfig.get_paths()["purelib"]
    (site / "zz_gpustack_bench_deps.pth").write_text(deps + "\n")  # appended after the venv's own site-packages
    shutil.copytree(tree / "gpustack", site / "gpustack", ignore=shutil.ignore_patterns("__pycache__", "*.nbi",
                                                                                       "*.nbc"))
    if (tree / "kernels").is_dir():
        shutil.copytree(tree / "kernels", site / "gpustack" / "kernels", dirs_exist_ok=True)
    compileall.compile_dir(str(site / "gpustack"), quiet=1)
    return python


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_round(tree: Path, folder: Path, extra: list[str], venv: bool) -> dict:
    """A cold run then a warm run of ``tree``'s package, each in a fresh process, in a new temporary
    folder (a new empty Numba cache, or a new virtual environment)."""
    with tempfile.TemporaryDirectory(prefix="gpustack-cold-") as tmp:
        tmp = Path(tmp)
        env = dict(os.environ)
        if venv:
            python = fresh_venv(tmp / "venv", tree)
            env.pop("NUMBA_CACHE_DIR", None)
            env.pop("PYTHONPATH", None)
        else:
            python = Path(sys.executable)
            env["NUMBA_CACHE_DIR"] = str(tmp / "numba-cache")
            env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
        row = {"load_before": os.getloadavg()[0]}
        for kind in ("cold", "warm"):
            out = tmp / f"fused-{kind}.tif"
            cmd = [str(python), "-m", "gpustack", "stack", str(folder), "-o", str(out), "--depth-map",
                   str(tmp / f"depth-{kind}.tif"), *extra]
            row[kind] = timed(cmd, env, tmp)
            row[kind]["sha256"] = sha256(out)
        row["load_after"] = os.getloadavg()[0]
        row["same_bytes"] = row["cold"]["sha256"] == row["warm"]["sha256"]
        return row


def describe(label: str, row: dict) -> str:
    c, w = row["cold"], row["warm"]
    return (f"{label}: cold {c['wall_s']:6.2f} s wall {c['cpu_s']:6.2f} s CPU | warm {w['wall_s']:6.2f} s "
            f"wall {w['cpu_s']:6.2f} s CPU | cold/warm {c['wall_s'] / w['wall_s']:.2f} wall "
            f"{c['cpu_s'] / w['cpu_s']:.2f} CPU | load {row['load_before']:.2f} -> {row['load_after']:.2f}"
            f"{'' if row['same_bytes'] else ' | OUTPUTS DIFFER'}")


def medians(rows: list[dict]) -> dict:
    """best and median of each run's wall and CPU seconds."""
    summary = {}
    for kind in ("cold", "warm"):
        for m in ("wall_s", "cpu_s"):
            vals = [row[kind][m] for row in rows]
            summary[f"{kind}_{m}"] = {"best": min(vals), "median": statistics.median(vals)}
    return summary


def print_medians(label: str, summary: dict) -> None:
    print("{}median: cold {:.2f} s wall {:.2f} s CPU; warm {:.2f} s wall {:.2f} s CPU; best cold {:.2f} s wall".format(
        label, summary["cold_wall_s"]["median"], summary["cold_cpu_s"]["median"], summary["warm_wall_s"]["median"],
        summary["warm_cpu_s"]["median"], summary["cold_wall_s"]["best"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", default=str(ROOT / "examples" / "pcb"), help="the stack (default: examples/pcb)")
    ap.add_argument("--rounds", type=int, default=3, help="cold + warm pairs (default 3)")
    ap.add_argument("--venv", action="store_true", help="the cold run from a fresh virtual environment")
    ap.add_argument("--args", default="", help="more options for gpustack stack, one string")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another checkout (its root folder) run in each round too, alternated; prints the ratios")
    args = ap.parse_args(argv)
    folder = Path(args.folder).resolve()
    extra = shlex.split(args.args)
    base = None if args.baseline is None else args.baseline.resolve()
    if base is not None and not (base / "gpustack" / "__init__.py").is_file():
        raise SystemExit(f"bench/cold.py: {base} holds no gpustack package; give the root of a checkout")
    trees = {"this": ROOT} if base is None else {"this": ROOT, "base": base}
    rows = {name: [] for name in trees}
    print(f"machine: {machine('cpu')}")
    print(f"load average before: {os.getloadavg()}")
    if base is not None:
        print(f"this tree: {ROOT}; base: {base}")
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(trees)[::-1]  # who goes first alternates
        for name in order:
            row = one_round(trees[name], folder, extra, args.venv)
            row["round"] = r + 1
            rows[name].append(row)
            print(describe(f"round {r + 1}{'' if base is None else ' ' + name}", row))
        if base is not None:
            t, b = rows["this"][-1], rows["base"][-1]
            print(f"round {r + 1} this/base: cold {t['cold']['wall_s'] / b['cold']['wall_s']:.3f} wall "
                  f"{t['cold']['cpu_s'] / b['cold']['cpu_s']:.3f} CPU | warm "
                  f"{t['warm']['wall_s'] / b['warm']['wall_s']:.3f} wall {t['warm']['cpu_s'] / b['warm']['cpu_s']:.3f} CPU"
                  f"{'' if t['cold']['sha256'] == b['cold']['sha256'] else ' | outputs differ from base'}")
    summary = medians(rows["this"])
    print_medians("" if base is None else "this: ", summary)
    result = {"bench": "cold", "mode": "venv" if args.venv else "cache-dir", "folder": str(folder), "args": extra,
              "machine": machine("cpu"), "rounds": rows["this"], "summary": summary}
    if base is not None:
        result["baseline"] = {"tree": str(base), "rounds": rows["base"], "summary": medians(rows["base"])}
        print_medians("base: ", result["baseline"]["summary"])
        ratios = {f"{kind}_{m}": statistics.median(t[kind][m] / b[kind][m] for t, b in zip(rows["this"], rows["base"]))
                  for kind in ("cold", "warm") for m in ("wall_s", "cpu_s")}
        result["ratios"] = ratios
        print("median of the paired ratios this/base: cold {:.3f} wall {:.3f} CPU; warm {:.3f} wall {:.3f} CPU".format(
            ratios["cold_wall_s"], ratios["cold_cpu_s"], ratios["warm_wall_s"], ratios["warm_cpu_s"]))
    print(f"load average after: {os.getloadavg()}")
    print(json.dumps(result))
    return 0 if all(row["same_bytes"] for rs in rows.values() for row in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
