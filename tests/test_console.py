"""What ``gpustack stack`` shows on stderr (gpustack.console): our lines only. tifffile's log records
and LibRaw's own stderr lines about a corrupt file are not shown (the one error line about that file
is ours), warnings are messages without a source location, the progress bar has its format."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from dng import write_dng_stack
from gpustack import synth

REPO = Path(__file__).resolve().parents[1]


def _cli(args, supervise="1"):
    env = dict(os.environ, PYTHONPATH=str(REPO), GPUSTACK_SUPERVISE=supervise)
    return subprocess.run([sys.executable, "-m", "gpustack", "stack", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.mark.parametrize("case", ["tiff_header", "tiff_tags", "dng"])
@pytest.mark.parametrize("supervise", ["1", "0"])
def test_a_corrupt_file_gives_our_line_only(tmp_path, case, supervise):
    """Truncated so that tifffile logs ("invalid offset to first page", "TiffTag.fromfile raised")
    or LibRaw prints ("<file>: Unexpected end of file") before failing: one line, ours."""
    src = tmp_path / "in"
    if case == "dng":
        st = synth.make_stack(n_frames=3, shape=(48, 64), seed=2)
        paths = write_dng_stack(st.frames, src)
        cut = 3000
    else:
        src.mkdir()
        rng = np.random.default_rng(0)
        paths = []
        for k in range(3):
            paths.append(src / f"f{k}.tif")
            tifffile.imwrite(paths[-1], rng.integers(0, 65535, (48, 64, 3), dtype=np.uint16), compression="zlib")
        cut = 8 if case == "tiff_header" else 200
    paths[1].write_bytes(paths[1].read_bytes()[:cut])
    res = _cli([src, "-o", tmp_path / "f.tif"], supervise)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [res.stderr.strip()], res.stderr
    assert res.stderr.startswith(f"gpustack: error: {paths[1]}: cannot "), res.stderr


def test_a_warning_is_a_message_not_a_code_location(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        tifffile.imwrite(src / f"f{k}.tif", rng.integers(0, 65535, (48, 64, 3), dtype=np.uint16))
    (src / "f9.tif").symlink_to(tmp_path / "moved-away.tif")
    res = _cli([src, "-o", tmp_path / "f.tif", "--align", "none"])
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [f"gpustack: WARNING: {src / 'f9.tif'} is a symbolic link to "
                                       f"{tmp_path / 'moved-away.tif'}, which does not exist; skipped"], res.stderr


def test_libraw_lines_are_debug_records_with_vv(tmp_path):
    """Not lost: with -vv they are shown as our debug records."""
    st = synth.make_stack(n_frames=3, shape=(48, 64), seed=2)
    paths = write_dng_stack(st.frames, tmp_path / "in")
    paths[1].write_bytes(paths[1].read_bytes()[:3000])
    res = _cli([tmp_path / "in", "-o", tmp_path / "f.tif", "-vv"])
    assert f"gpustack: DEBUG: gpustack.io.raw: LibRaw: {paths[1]}: Unexpected end of file" in res.stderr.splitlines()


def test_progress_bar_format():
    from gpustack.console import ProgressBar
    from gpustack.pipeline import ProgressEvent

    buf = io.StringIO()
    bar = ProgressBar(buf)
    for k in range(1, 4):
        bar(ProgressEvent("fuse", k, 10, f"f{k}.tif", 0.1 * k))
    bar.close()
    last = buf.getvalue().split("\r")[-1]
    assert "3/10" in last and "fuse" in last and "fr/s" in last and "ETA" in last and "f3.tif" in last
