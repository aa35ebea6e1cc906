#!/usr/bin/env python
"""The readers' fuzz at any size: the CI test's harness (tests/fuzz.py) for many more files.

    python bench/fuzz_readers.py --cases 20000 --seeds 1,2,3 [--time-limit 20] [--dir /tmp/fuzz]

For each seed: write the seed files (every format and layout the readers take) and ``--cases``
mutated copies, read each in a worker process as ``gpustack stack`` would, and print the outcomes
per format, every failure (with the seed and case that rewrite the file), the time and the machine.
Exits 1 if any file broke the promise (read, or one DecodeError/InputError line naming it).
"""

from __future__ import annotations

import argparse
import collections
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20000, help="mutated files per seed")
    ap.add_argument("--seeds", default="1", help="comma-separated seeds")
    ap.add_argument("--time-limit", type=float, default=20.0, help="seconds a file may take before it counts as a hang")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where to write the files (kept); default: a temporary folder, removed")
    args = ap.parse_args(argv)

    import fuzz

    top = args.dir or Path(tempfile.mkdtemp(prefix="gpustack-fuzz-"))
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()} {platform.release()}, "
          f"python {platform.python_version()}")
    failed = 0
    try:
        for seed in (int(s) for s in args.seeds.split(",")):
            folder = top / f"seed{seed}"
            seeds = fuzz.write_seeds(folder / "seeds")
            how = fuzz.write_cases(seeds, folder / "cases", args.cases, seed)
            t0 = time.perf_counter()
            outcomes, stderr = fuzz.read_cases(list(how), time_limit=args.time_limit)
            seconds = time.perf_counter() - t0
            per_format = collections.defaultdict(collections.Counter)
            for o in outcomes:
                per_format[o.path.name.split("_", 1)[1]][o.outcome] += 1
            print(f"seed {seed}: {len(outcomes)} files in {seconds:.1f} s ({len(outcomes) / seconds:.0f} files/s)")
            for name, counts in sorted(per_format.items()):
                print(f"  {name:22s} " + "  ".join(f"{k} {v}" for k, v in sorted(counts.items())))
            bad = fuzz.failures(outcomes, how)
            for line in bad:
                print("  FAIL", line)
            if stderr:
                print("  FAIL stderr:", stderr[:2000])
            failed += len(bad) + bool(stderr)
    finally:
        if args.dir is None:
            shutil.rmtree(top, ignore_errors=True)
    print("all files read or refused in one line" if not failed else f"{failed} failures")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
