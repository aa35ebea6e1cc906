"""Fuzzing the frame readers: mutated and truncated JPEG, PNG, TIFF and DNG files, each read in a
worker process with a time limit, the outcome of each classified.

Used by ``tests/test_fuzz_readers.py`` (a few hundred files, in CI) and ``bench/fuzz_readers.py``
(as many as asked). Everything is seeded: a failure names the seed and the case, and
``write_cases`` with that seed writes the same file again.

What must happen to each file (what ``gpustack stack`` would do with it), :func:`failures` checks:
``read`` (decoded and accepted by the frame checks) or ``refused`` (one ``DecodeError`` or
``InputError``, one line naming the file); never ``traceback`` (any other exception), ``hang`` (no
outcome within the time limit), ``crash`` (the worker process died), nor a line on stderr that is
not ours (another library's log record or warning, LibRaw's own output). Our own warnings about a
damaged file that still reads (a DNG without its white balance) are allowed.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

#: The mutations, each ``(data, rng) -> data``.
MUTATIONS = ("truncate", "flip", "overwrite", "header", "zeros", "duplicate")


def write_seeds(folder: Path, shape=(96, 128)) -> list[Path]:
    """One valid file of each kind and layout the readers take (strips, tiles, planar, pages,
    metadata blocks), from a synthetic test stack's frame."""
    sys.path.insert(0, str(Path(__file__).parent))
    from dng import write_dng_stack
    from PIL import ImageCms

    from gpustack import synth
    from gpustack.io import write_image

    folder.mkdir(parents=True, exist_ok=True)
    st = synth.make_stack(n_frames=2, shape=shape, seed=11)
    rgb16 = st.as_uint16()[0]
    rgb8 = (rgb16 >> 8).astype(np.uint8)
    exif = Image.Exif()
    exif[271], exif[272], exif[274] = "gpustack", "fuzz", 1
    exif.get_ifd(0x8769)[36867] = "2024:05:01 10:11:12"
    exif = exif.tobytes()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

    def tiff(name, data, **kw):
        tifffile.imwrite(folder / name, data, **kw)

    Image.fromarray(rgb8).save(folder / "rgb.jpg", quality=90)
    Image.fromarray(rgb8[:, :, 1]).save(folder / "gray_progressive.jpg", quality=90, progressive=True)
    write_image(folder / "exif_icc.jpg", rgb8, fmt="jpeg", exif=exif, icc=icc)
    Image.fromarray(rgb8).save(folder / "rgb8.png")
    Image.fromarray(rgb8).convert("P").save(folder / "palette.png")
    write_image(folder / "rgb16_meta.png", rgb16, fmt="png", exif=exif, icc=icc, metadata={"k": "v"})
    (folder / "gray16.png").write_bytes(imagecodecs.png_encode(np.ascontiguousarray(rgb16[:, :, 0])))
    tiff("rgb16_strips.tif", rgb16, rowsperstrip=8, photometric="rgb")
    tiff("rgb8_zlib.tif", rgb8, compression="zlib", predictor=True, rowsperstrip=16)
    tiff("rgb16_tiles.tif", rgb16, tile=(32, 32), compression="zlib", photometric="rgb")
    tiff("planar.tif", np.moveaxis(rgb16, -1, 0), planarconfig="separate", photometric="rgb")
    tiff("float.tif", st.frames[0].astype(np.float32), photometric="rgb", compression="zlib")
    tiff("pages.tif", np.stack([rgb16[:, :, c] for c in range(3)]), compression="lzw", photometric="minisblack")
    write_image(folder / "exif_icc.tif", rgb16, fmt="tiff", exif=exif, icc=icc)
    [dng] = write_dng_stack(st.frames[:1], folder / "dng")
    dng.rename(folder / "frame.dng")
    (folder / "dng").rmdir()
    return sorted(p for p in folder.iterdir() if p.is_file())


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """``data`` with one to three mutations, and their names."""
    out = bytearray(data)
    names = []
    for _ in range(int(rng.integers(1, 4))):
        kind = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
        n = len(out)
        if n == 0:
            break
        if kind == "truncate":
            out = out[: int(rng.integers(0, n))]
        elif kind == "flip":
            for _ in range(int(rng.integers(1, 9))):
                out[int(rng.integers(n))] ^= 1 << int(rng.integers(8))
        elif kind == "overwrite":
            at, length = int(rng.integers(n)), int(rng.integers(1, 65))
            out[at:at + length] = rng.integers(0, 256, min(length, n - at), dtype=np.uint8).tobytes()
        elif kind == "header":  # size fields, offsets, counts: the first bytes, extreme values
            at = int(rng.integers(min(n, 512)))
            value = [0, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, int(rng.integers(1 << 32))][int(rng.integers(5))]
            width = 2 if rng.random() < 0.5 else 4
            out[at:at + width] = value.to_bytes(4, "little" if rng.random() < 0.5 else "big")[:width]
        elif kind == "zeros":
            at, length = int(rng.integers(n)), int(rng.integers(1, 257))
            out[at:at + length] = bytes(min(length, n - at))
        else:  # duplicate a chunk somewhere else (shifts every offset after it)
            at, length, to = int(rng.integers(n)), int(rng.integers(1, 257)), int(rng.integers(n))
            out[to:to] = out[at:at + length]
        names.append(kind)
    return bytes(out), "+".join(names)


def write_cases(seeds: list[Path], folder: Path, count: int, seed: int) -> dict[Path, str]:
    """``count`` mutated files (round robin over ``seeds``, same extension), and how each was made."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    originals = [p.read_bytes() for p in seeds]
    cases = {}
    for i in range(count):
        k = i % len(seeds)
        data, how = mutate(originals[k], rng)
        path = folder / f"case{i:05d}_{seeds[k].name}"
        path.write_bytes(data)
        cases[path] = f"seed {seed}, case {i}: {seeds[k].name} {how}"
    return cases


#: Reads each file as ``gpustack stack`` would (list, decode, frame checks), with the command's
#: logging and stderr set-up; one JSON line per file on stdout, a "start" line before it.
WORKER = r"""
import io, json, logging, sys, traceback
from gpustack.console import configure_logging, quiet_native_stderr
from gpustack.errors import DecodeError, InputError
from gpustack.io import list_frames, read_frame
from gpustack.stages.check import check_frame

paths = [line.rstrip("\n") for line in open(sys.argv[1], encoding="utf-8")]
said = io.StringIO()
with quiet_native_stderr():
    configure_logging(0, stream=said)
    for handler in logging.getLogger("gpustack").handlers:
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    for i in range(int(sys.argv[2]), len(paths)):
        print(json.dumps({"start": i}), flush=True)
        out = {"i": i}
        try:
            for source in list_frames([paths[i]]):
                check_frame(read_frame(source, 0), aligned=False)
            out["outcome"] = "read"
        except (DecodeError, InputError) as exc:
            out["outcome"], out["detail"] = "refused", f"{type(exc).__name__}: {exc}"
        except BaseException:
            out["outcome"], out["detail"] = "traceback", traceback.format_exc()
        if said.getvalue():
            out["said"] = said.getvalue()
            said.seek(0)
            said.truncate()
        print(json.dumps(out), flush=True)
"""


@dataclass
class Outcome:
    path: Path
    outcome: str  # read, refused, traceback, hang, crash
    detail: str = ""
    said: str = ""


def read_cases(paths: list[Path], time_limit: float = 20.0, hook: Path | None = None) -> tuple[list[Outcome], str]:
    """Each file's outcome, read in a worker process (restarted after a hang or a crash, from the
    next file), and what the workers wrote on stderr themselves. ``hook``: a folder put first on
    the workers' ``PYTHONPATH`` (a ``sitecustomize.py`` there runs in each)."""
    listing = paths[0].parent / "cases.txt"
    listing.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    path = [str(hook) if hook else None, str(REPO), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)))
    outcomes: list[Outcome | None] = [None] * len(paths)
    stderr = []
    start = 0
    while start < len(paths):
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(listing), str(start)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        lines: queue.Queue = queue.Queue()
        # the readers bind this worker's process and queue: a reader still draining a killed worker must not
        # feed the next worker's queue
        out_reader = threading.Thread(target=lambda p=proc, q=lines: [q.put(ln) for ln in p.stdout] + [q.put(None)],
                                      daemon=True)
        err_reader = threading.Thread(target=lambda p=proc: stderr.append(p.stderr.read()), daemon=True)
        out_reader.start()
        err_reader.start()
        current = None
        while True:
            try:
                line = lines.get(timeout=time_limit if current is not None else 120)
            except queue.Empty:
                proc.kill()
                proc.wait()
                if current is None:
                    raise RuntimeError("the fuzz worker did not start") from None
                outcomes[current] = Outcome(paths[current], "hang", f"no outcome in {time_limit} s")
                break
            if line is None:
                code = proc.wait()
                if current is not None:
                    outcomes[current] = Outcome(paths[current], "crash", f"worker exit status {code}")
                break
            record = json.loads(line)
            if "start" in record:
                current = record["start"]
            else:
                outcomes[record["i"]] = Outcome(paths[record["i"]], record["outcome"], record.get("detail", ""),
                                                record.get("said", ""))
                current = None
        proc.wait()
        out_reader.join(timeout=10)
        err_reader.join(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
        start = next((i for i, o in enumerate(outcomes) if o is None), len(paths))
    return outcomes, "".join(stderr)


def failures(outcomes: list[Outcome], how: dict[Path, str]) -> list[str]:
    """One line per file whose outcome breaks the promise (see the module docstring)."""
    bad = []
    for o in outcomes:
        problem = None
        if o.outcome not in ("read", "refused"):
            problem = f"{o.outcome}: {o.detail.strip().splitlines()[-1] if o.detail.strip() else ''}"
        elif o.outcome == "refused" and ("\n" in o.detail or o.path.name not in o.detail):
            problem = f"an error that is not one line naming the file: {o.detail!r}"
        elif any(not line.startswith("gpustack.") for line in o.said.splitlines()):
            problem = f"another library spoke: {o.said.strip()!r}"
        if problem:
            bad.append(f"{how[o.path]} ({o.path.name}): {problem}")
    return bad
