"""The command line: options, exit codes, one-line errors, no partial outputs, inputs untouched."""

import errno
import hashlib
import json
import os
import re
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
    assert side["options"]["maps"] is True and side["depth"]["unit"] == "frame"
    assert side["depth"]["min"] == float(depth.min()) and side["depth"]["max"] == float(depth.max())
    assert _digest(frames) == before, "inputs must never be modified"
    # the CLI result equals the API result on the same frames
    api = gpustack.stack([str(p) for p in frames], backend="cpu", align="none")
    np.testing.assert_array_equal(api.image, img)
    # without a map to write, the command makes none: the same image, no depth in the sidecar
    alone = tmp_path / "alone.tif"
    code, _, err = _run(["stack", str(tmp_path / "in"), "-o", str(alone), "--backend", "cpu", "--align", "none", "-q"],
                        capsys)
    assert code == 0, err
    np.testing.assert_array_equal(tifffile.imread(alone), img)
    side = json.loads((tmp_path / "alone.tif.json").read_text())
    assert side["options"]["maps"] is False and side["depth"] is None


def test_cpu_run_does_not_import_cupy(tmp_path):
    """The sidecar names the versions of the libraries the run used; a CPU run must not import CuPy
    only to name it."""
    _write_stack(tmp_path / "in")
    code = ("import sys, json, gpustack; r = gpustack.stack(sys.argv[1], backend='cpu', align='none'); "
            "print(json.dumps([sorted(r.to_dict()['versions']), 'cupy' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "in")], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    names, cupy_imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert "tifffile" in names, "the reader the run used is named"
    assert not cupy_imported and "cupy" not in names


@pytest.mark.parametrize("preset", [None, "4"])
def test_the_command_starts_no_blas_threads_unless_told_to(preset):
    """The command sets ``OPENBLAS_NUM_THREADS=1`` for its processes (OpenBLAS's idle threads spin,
    taking CPU from the frames) before NumPy loads it, so the command's module must not import NumPy;
    a value the user set is kept."""
    code = ("import os, sys\nfrom gpustack.cli import main\nbefore = 'numpy' in sys.modules\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(before, os.environ.get('OPENBLAS_NUM_THREADS'))")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset is not None:
        env["OPENBLAS_NUM_THREADS"] = preset
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split()[-2:] == ["False", preset or "1"]  # (after the version line)


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


#: Each bad input, the exit status the README's table gives it (2: bad input or options; 1: unreadable
#: files, output and backend problems) and what its one line must name.
BAD_INPUTS = {"missing": 2, "empty_folder": 2, "not_image": 1, "truncated_jpeg": 1, "truncated_tiff": 1,
              "corrupt_raw": 1, "sizes": 2, "sizes_aligned": 2, "channels": 2, "single": 2, "output_is_input": 2,
              "no_out_folder": 1, "bad_ext": 2, "output_folder": 2, "output_no_ext": 2, "cuda": 1, "z_step_inf": 2,
              "z_step_nan": 2, "contrast_nan": 2, "reference_negative": 2, "non_finite_frame": 2,
              "too_small": 2}


@pytest.mark.parametrize("case", BAD_INPUTS)
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
    elif case in ("sizes", "sizes_aligned"):
        tifffile.imwrite(frames[2], np.zeros((40, 64, 3), np.uint16))
        expect = "frame 2 (frame_3.tif) is 64x40 but frame 1 (frame_2.tif) is 64x48"
        if case == "sizes_aligned":
            args += ["--align", "similarity"]
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
    elif case == "output_folder":
        out, expect = tmp_path / "out", f"output {tmp_path / 'out'} is a folder; give the file to write, such as"
    elif case == "output_no_ext":
        out, expect = tmp_path / "out" / "fused", "no extension; use one of"
    elif case == "cuda":
        from gpustack.backends import cuda_status

        if cuda_status()[0]:
            pytest.skip("this machine has CUDA")
        args, expect = args + ["--backend", "cuda"], "--backend cpu"
    elif case in ("z_step_inf", "z_step_nan"):
        args, expect = args + ["--z-step", case[-3:]], "z_step must be a positive, finite number"
    elif case == "contrast_nan":
        args, expect = args + ["--contrast-threshold", "nan"], "contrast_threshold must be a number from 0 to 1"
    elif case == "reference_negative":
        args, expect = args + ["--reference", "-1"], "reference must be a frame index"
    elif case == "non_finite_frame":
        bad = np.full((48, 64, 3), 0.5, np.float32)
        bad[1, 2, 0] = np.nan
        for k in range(3):
            tifffile.imwrite(frames[k], bad if k == 0 else np.full_like(bad, 0.25), photometric="rgb")
        expect = "frame 0 (frame_1.tif) has 1 non-finite sample (NaN or infinity) of 9216"
    elif case == "too_small":
        for k in range(3):
            tifffile.imwrite(frames[k], np.zeros((2, 2, 3), np.uint16))
        args, expect = args + ["--align", "similarity"], "is 2x2 pixels, too small: frames must be at least 16x16"
    before = _digest([p for p in src.iterdir()])
    code, _, err = _run(["stack", *args, "-o", str(out), "--depth-map", str(tmp_path / "out" / "d.tif")], capsys)
    line = _one_error_line(err)
    assert code == BAD_INPUTS[case], (code, line)
    assert expect in line, line
    assert _digest([p for p in src.iterdir()]) == before
    leftovers = [p.name for p in (tmp_path / "out").iterdir()]
    assert leftovers == [], leftovers


@pytest.mark.parametrize("argv, says", [
    (["stack", "in", "-o", "f.tif", "--time", "last"], "argument --time: invalid int value: 'last'"),
    (["stack", "in", "-o", "f.tif", "--levels", "2.5"], "argument --levels: invalid int value: '2.5'"),
    (["stack", "in"], "the following arguments are required: -o/--output"),
    (["stack", "in", "-o", "f.tif", "--align", "rigid"], "argument --align: invalid choice: 'rigid'"),
    (["stack", "in", "-o", "f.tif", "--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_a_usage_mistake_is_one_line_and_points_to_help(capsys, argv, says):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"gpustack: error: {says}" + err.split(says, 1)[1].rstrip("\n")], err
    assert re.search(r"; see 'gpustack( stack)? --help'$", err.rstrip()) and "usage:" not in err


@pytest.mark.parametrize("where", ["tmpfs", "injected"])
def test_a_full_disk_on_the_second_output_leaves_nothing(tmp_path, capsys, monkeypatch, where):
    """-o out/fused.tif --depth-map full/depth.tif with full/ a full file system: exit 1 naming the
    depth map, and fused.tif is not left behind (outputs are published together). On a real 2 MiB
    tmpfs, filled up, where this process may mount one (root); else by a writer that fails with
    ENOSPC."""
    _write_stack(tmp_path / "in")
    (tmp_path / "out").mkdir()
    full = tmp_path / "full"
    full.mkdir()
    if where == "tmpfs":
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(full)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
        try:
            with open(full / "filler", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
            code, _, err = _run(["stack", str(tmp_path / "in"), "-o", str(tmp_path / "out" / "fused.tif"),
                                 "--depth-map", str(full / "depth.tif")], capsys)
            left_in_full = sorted(p.name for p in full.iterdir())
        finally:
            subprocess.run(["umount", str(full)], check=True)
    else:
        from gpustack.io import write as write_module

        real = write_module._tiff

        def tiff(f, data, photometric, **kw):
            if Path(f.name).name.startswith(".depth.tif."):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(f, data, photometric, **kw)

        monkeypatch.setattr(write_module, "_tiff", tiff)
        code, _, err = _run(["stack", str(tmp_path / "in"), "-o", str(tmp_path / "out" / "fused.tif"),
                             "--depth-map", str(full / "depth.tif")], capsys)
        left_in_full = sorted(p.name for p in full.iterdir())
    assert code == 1
    line = _one_error_line(err)
    assert f"cannot write {full / 'depth.tif'}: No space left on device" in line, line
    assert list((tmp_path / "out").iterdir()) == []  # not fused.tif, not its sidecar, no temporary
    assert left_in_full == (["filler"] if where == "tmpfs" else [])


@pytest.mark.parametrize("case", ["folder", "file"])
def test_unreadable_inputs_exit_1_with_one_line(case):
    """``chmod 311 in`` (the folder cannot be listed) or an unreadable frame, as an unprivileged user
    (root reads everything): exit 1, one line naming it."""
    from unprivileged import run_python, shared_folder

    with shared_folder() as top:
        src = top / "in"
        frames = _write_stack(src)
        (top / "out").mkdir(mode=0o777)
        (top / "out").chmod(0o777)
        target = src if case == "folder" else frames[1]
        target.chmod(0o311 if case == "folder" else 0o200)
        res = run_python(["-m", "gpustack", "stack", str(src), "-o", str(top / "out" / "f.tif"), "--align", "none"],
                         env={"GPUSTACK_SUPERVISE": "0"})
        assert list((top / "out").iterdir()) == []
    assert res.returncode == 1, res.stderr
    line = _one_error_line(res.stderr)
    assert line.startswith(f"gpustack: error: {target}: cannot ") and "Permission denied" in line, line


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
