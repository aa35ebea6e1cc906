"""The command line: options, exit codes, one-line errors, no partial outputs, inputs untouched."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import gpustack
from gpustack.cli import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "pcb"


def _digest(paths):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _write_stack(folder: Path, n=3, shape=(48, 64, 3), fmt="tif", seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(n):
        frame = rng.integers(0, 65535 if fmt == "tif" else 255, shape).astype(np.uint16 if fmt == "tif" else np.uint8)
        p = folder / f"frame_{k + 1}.{fmt}"
        if fmt == "tif":
            tifffile.imwrite(p, frame)
        else:
            Image.fromarray(frame).save(p)
        paths.append(p)
    return paths


def _run(argv, capsys):
    """main(argv); the random test frames share no content, so alignment is off unless asked for."""
    if argv and argv[0] == "stack" and "--align" not in argv:
        argv = argv + ["--align", "none"]
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("gpustack: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_stack_writes_image_depth_and_sidecar(tmp_path, capsys):
    frames = _write_stack(tmp_path / "in")
    before = _digest(frames)
    out = tmp_path / "fused.tif"
    code, _, err = _run(["stack", str(tmp_path / "in"), "-o", str(out), "--depth-map", str(tmp_path / "d.tif"),
                         "--backend", "cpu", "--align", "none", "-q"], capsys)
    assert code == 0, err
    img = tifffile.imread(out)
    assert img.shape == (48, 64, 3) and img.dtype == np.uint16
    depth = tifffile.imread(tmp_path / "d.tif")
    assert depth.dtype == np.float32 and depth.shape == (48, 64)
    assert 0 <= depth.min() and depth.max() <= 2
    side = json.loads((tmp_path / "fused.tif.json").read_text())
    assert side["options"]["backend"] == "cpu" and len(side["frames"]) == 3
    assert [f["name"] for f in side["frames"]] == ["frame_1.tif", "frame_2.tif", "frame_3.tif"]
    assert _digest(frames) == before, "inputs must never be modified"
    # the CLI result equals the API result on the same frames
    api = gpustack.stack([str(p) for p in frames], backend="cpu", align="none")
    np.testing.assert_array_equal(api.image, img)


def test_existing_output_needs_overwrite(tmp_path, capsys):
    _write_stack(tmp_path / "in")
    out = tmp_path / "fused.tif"
    out.write_bytes(b"precious")
    code, _, err = _run(["stack", str(tmp_path / "in"), "-o", str(out)], capsys)
    assert code != 0
    assert "--overwrite" in _one_error_line(err)
    assert out.read_bytes() == b"precious"
    code, _, err = _run(["stack", str(tmp_path / "in"), "-o", str(out), "--overwrite", "-q"], capsys)
    assert code == 0, err
    assert tifffile.imread(out).shape == (48, 64, 3)


@pytest.mark.parametrize("case", ["missing", "empty_folder", "not_image", "truncated_jpeg", "truncated_tiff",
                                  "corrupt_raw", "sizes", "channels", "single", "output_is_input",
                                  "no_out_folder", "bad_ext", "cuda"])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, capsys, case):
    src = tmp_path / "in"
    frames = _write_stack(src, fmt="jpg" if case == "truncated_jpeg" else "tif")
    out = tmp_path / "out" / "fused.tif"
    out.parent.mkdir()
    args = [str(src)]
    expect = None
    if case == "missing":
        args, expect = [str(tmp_path / "nope")], "nope"
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        args, expect = [str(tmp_path / "empty")], "empty"
    elif case == "not_image":
        (src / "notes.tif").write_text("hello, these are my notes")
        expect = "notes.tif"
    elif case == "truncated_jpeg":
        data = frames[1].read_bytes()
        frames[1].write_bytes(data[: len(data) // 2])
        expect = frames[1].name
    elif case == "truncated_tiff":
        data = frames[1].read_bytes()
        frames[1].write_bytes(data[: len(data) // 2])
        expect = frames[1].name
    elif case == "corrupt_raw":
        (src / "frame_9.nef").write_bytes(np.random.default_rng(1).bytes(5000))
        expect = "frame_9.nef"
    elif case == "sizes":
        tifffile.imwrite(frames[2], np.zeros((40, 64, 3), np.uint16))
        expect = "frame_3.tif"
    elif case == "channels":
        tifffile.imwrite(frames[2], np.zeros((48, 64), np.uint16))
        expect = "frame_3.tif"
    elif case == "single":
        args, expect = [str(frames[0])], "at least 2 frames"
    elif case == "output_is_input":
        out, expect = frames[0], "input"
    elif case == "no_out_folder":
        out, expect = tmp_path / "missing_dir" / "fused.tif", "missing_dir"
    elif case == "bad_ext":
        out, expect = tmp_path / "out" / "fused.bmp", ".bmp"
    elif case == "cuda":
        from gpustack.backends import cuda_status

        if cuda_status()[0]:
            pytest.skip("this machine has CUDA")
        args, expect = args + ["--backend", "cuda"], "--backend cpu"
    before = _digest([p for p in src.iterdir()])
    code, _, err = _run(["stack", *args, "-o", str(out), "--depth-map", str(tmp_path / "out" / "d.tif")], capsys)
    assert code in (1, 2)
    line = _one_error_line(err)
    assert expect in line, line
    assert _digest([p for p in src.iterdir()]) == before
    leftovers = [p.name for p in (tmp_path / "out").iterdir()]
    assert leftovers == [], leftovers


def test_order_reverse_reverses_depth(tmp_path):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(2)
    truth = rng.uniform(0.1, 0.9, (64, 64))
    near = np.where(np.arange(64) < 32, truth, gaussian_filter(truth, 3))
    far = np.where(np.arange(64) < 32, gaussian_filter(truth, 3), truth)
    for name, img in (("a_1.tif", near), ("a_2.tif", far)):
        tifffile.imwrite(tmp_path / name, (img * 65535).astype(np.uint16))
    fwd = gpustack.stack([str(tmp_path)], backend="cpu", depth_smooth=0, align="none")
    rev = gpustack.stack([str(tmp_path)], backend="cpu", depth_smooth=0, order="reverse", align="none")
    assert np.median(fwd.depth_raw[8:-8, 8:24]) == 0 and np.median(fwd.depth_raw[8:-8, 40:56]) == 1
    assert np.median(rev.depth_raw[8:-8, 8:24]) == 1 and np.median(rev.depth_raw[8:-8, 40:56]) == 0
    assert [f.name for f in rev.frames] == ["a_2.tif", "a_1.tif"]


def test_png_and_jpeg_outputs_and_bits(tmp_path, capsys):
    _write_stack(tmp_path / "in")
    for name, extra, dtype in (("f.png", [], np.uint16), ("f8.png", ["--bits", "8"], np.uint8),
                               ("f.jpg", [], np.uint8)):
        code, _, err = _run(["stack", str(tmp_path / "in"), "-o", str(tmp_path / name), "-q", *extra], capsys)
        assert code == 0, err
        if name.endswith(".png") and dtype == np.uint16:
            import imagecodecs

            assert imagecodecs.png_decode((tmp_path / name).read_bytes()).dtype == np.uint16
        else:
            assert np.asarray(Image.open(tmp_path / name)).dtype == np.uint8
    code, _, err = _run(["stack", str(tmp_path / "in"), "-o", str(tmp_path / "x.jpg"), "--bits", "16"], capsys)
    assert code == 2 and "JPEG" in _one_error_line(err)


def test_linear_roundtrip_of_identical_frames(tmp_path):
    """--linear with identical 16-bit frames returns them exactly; sRGB mode too (decode/encode tables invert)."""
    frame = np.random.default_rng(4).integers(0, 65536, (40, 48, 3)).astype(np.uint16)
    for linear in (True, False):
        res = gpustack.stack([frame, frame], backend="cpu", linear=linear, align="none")
        diff = np.abs(res.image.astype(int) - frame.astype(int))
        assert diff.max() <= 1, diff.max()


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert gpustack.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["stack", "--help"])
    text = capsys.readouterr().out
    for opt in ("--backend", "--method", "--depth-map", "--order", "--linear", "--overwrite", "--verbose", "--quiet"):
        assert opt in text


def test_python_dash_m_and_progress_in_pipe(tmp_path):
    _write_stack(tmp_path / "in")
    env = dict(os.environ, PYTHONPATH=str(REPO), GPUSTACK_SUPERVISE="1")  # as a user runs it: supervised
    cmd = [sys.executable, "-m", "gpustack", "stack", str(tmp_path / "in"), "-o", str(tmp_path / "f.tif"),
           "--align", "none"]
    quiet = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and quiet.stdout == ""  # a pipe stays quiet
    loud = subprocess.run(cmd + ["--overwrite", "-v"], capture_output=True, text=True, env=env, timeout=300)
    assert loud.returncode == 0
    assert "[  3/  3] fuse" in loud.stderr and "backend" in loud.stderr


SEGFAULT_ON = """
import ctypes, os, rawpy
_imread = rawpy.imread
def imread(path, *args, **kwargs):
    if os.path.basename(str(path)) == os.environ["CRASH_ON"]:
        ctypes.string_at(0)  # a decoder that crashes the process (SIGSEGV)
    return _imread(path, *args, **kwargs)
rawpy.imread = imread
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_decoder_crash_names_the_file_and_leaves_nothing(tmp_path):
    """LibRaw dying inside a reader thread (simulated: a segfault when frame002.dng is opened) takes
    down only the supervised child: one line naming the file, exit 1, no output, no temporary file."""
    from dng import write_dng_stack

    from gpustack import synth

    st = synth.make_stack(n_frames=4, shape=(48, 64), seed=2)
    paths = write_dng_stack(st.frames, tmp_path / "in")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SEGFAULT_ON)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), str(REPO)]), CRASH_ON="frame002.dng",
               GPUSTACK_SUPERVISE="1")
    out = tmp_path / "out" / "f.tif"
    out.parent.mkdir()
    cmd = [sys.executable, "-m", "gpustack", "stack", *map(str, paths), "-o", str(out), "--depth-map",
           str(out.with_name("d.tif")), "--align", "none", "--workers", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "crashed (SIGSEGV) while decoding" in lines[0] and "frame002.dng" in lines[0], lines[0]
    assert "frame001.dng" not in lines[0]  # only the file being decoded is named
    assert list(out.parent.iterdir()) == []
    assert all(p.read_bytes()[:4] in (b"II*\0", b"MM\0*") for p in paths)  # inputs untouched
    env.pop("CRASH_ON")
    env["CRASH_ON"] = "none"
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0 and out.is_file(), ok.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_stops_the_child_and_leaves_nothing(tmp_path):
    """Killing ``gpustack stack`` (SIGTERM to the supervising process) stops its worker too: exit
    143, one line, no output and no temporary file."""
    import signal
    import time

    rng = np.random.default_rng(4)
    src = tmp_path / "in"
    src.mkdir()
    frame = rng.integers(0, 65535, (600, 800, 3), dtype=np.uint16)
    for k in range(60):  # a run of a few seconds: the signal comes after the first frame, long before the end
        tifffile.imwrite(src / f"f{k:02d}.tif", np.roll(frame, k, axis=1))
    out = tmp_path / "out" / "f.tif"
    out.parent.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), GPUSTACK_SUPERVISE="1")
    with subprocess.Popen([sys.executable, "-m", "gpustack", "stack", str(src), "-o", str(out), "-v",
                           "--align", "none"], env=env, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.monotonic() + 120
        seen = ""
        while "fuse" not in seen and time.monotonic() < deadline:  # wait until the child is fusing
            seen += proc.stderr.readline()
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=120) == 143
    assert "terminated; no partial output was left" in rest and "Traceback" not in rest
    assert list(out.parent.iterdir()) == []


def test_progress_bar_format():
    import io

    from gpustack.cli import ProgressBar
    from gpustack.pipeline import ProgressEvent

    buf = io.StringIO()
    bar = ProgressBar(buf)
    for k in range(1, 4):
        bar(ProgressEvent("fuse", k, 10, f"f{k}.tif", 0.1 * k))
    bar.close()
    last = buf.getvalue().split("\r")[-1]
    assert "3/10" in last and "fuse" in last and "fr/s" in last and "ETA" in last and "f3.tif" in last


def test_example_stack(tmp_path):
    """The bundled example stacks, with the sidecar describing all 7 frames."""
    res = gpustack.stack([str(EXAMPLE)], backend="cpu", output=tmp_path / "pcb.tif")
    # the stack breathes (about 2 % across it): the output is the area every aligned frame covers
    h, w, _ = res.image.shape
    assert 1400 < h < 1536 and 1850 < w < 2048 and res.crop is not None
    assert (res.crop[1] - res.crop[0], res.crop[3] - res.crop[2]) == (h, w)
    assert len(res.frames) == 7 and res.frames[0].name == "pcb_001.jpg"
    # sharper than every input frame: the fused image has more high-frequency energy
    from scipy.ndimage import laplace

    def sharp(img):
        return float(np.mean(laplace(img.astype(np.float32).mean(axis=2)) ** 2))

    r0, r1, c0, c1 = res.crop
    frames = [np.asarray(Image.open(p))[r0:r1, c0:c1] for p in sorted(EXAMPLE.glob("*.jpg"))]
    fused8 = (res.image >> 8).astype(np.uint8)
    assert sharp(fused8) > max(sharp(f) for f in frames)
    assert (tmp_path / "pcb.tif.json").exists()
