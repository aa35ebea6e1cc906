"""``gpustack batch`` and ``gpustack.batch``: discovery and names, byte-identical outputs, resume, failures
that stay local (a corrupt stack, a worker that dies), an interrupted batch, an external cluster.

The stacks are small synthetic ones (4 frames of 48x64); the clusters are local processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import gpustack
from gpustack import synth
from gpustack.batching import StackJob, find_stacks, output_paths, read_list
from gpustack.cli import main

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
ALIGN = ["--align", "translation"]


def _stack(folder: Path, seed: int, n=4, shape=(48, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(synth.make_stack(n_frames=n, shape=shape, seed=seed).as_uint16()):
        tifffile.imwrite(folder / f"frame_{k + 1}.tif", frame)
    return folder


def _corrupt(folder: Path) -> Path:
    _stack(folder, 99)
    (folder / "frame_2.tif").write_bytes((folder / "frame_2.tif").read_bytes()[:300])  # truncated
    return folder


def _env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), **extra)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _temporaries(folder: Path) -> list:
    return [p for p in folder.rglob(".*.tmp")]


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """Compile the kernels once in this process (the workers then load them from Numba's cache)."""
    folder = _stack(tmp_path_factory.mktemp("batch-warm"), 0)
    gpustack.stack(folder, backend="cpu", align="translation")
    gpustack.stack(folder, backend="cpu", align="translation", method="pyramid")


@pytest.fixture(scope="module")
def client(warm):
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                                  silence_logs=50) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture
def root(tmp_path):
    """Five stacks in nested folders: root/slide1/fov_1, fov_2, fov_10, root/slide2/fov_1, root/loose."""
    r = tmp_path / "root"
    for i, rel in enumerate(["slide1/fov_1", "slide1/fov_2", "slide1/fov_10", "slide2/fov_1", "loose"]):
        _stack(r / rel, i)
    return r


# --------------------------------------------------------------------------- discovery and names


def test_subfolders_are_stacks_named_by_relative_path(tmp_path):
    r = tmp_path / "root"
    _stack(r / "a" / "b", 1)
    _stack(r / "a" / "c10", 2)
    _stack(r / "a" / "c9", 3)
    (r / ".hidden").mkdir()
    _stack(r / ".hidden" / "x", 4)
    (r / "notes").mkdir()
    (r / "notes" / "readme.txt").write_text("no frames")
    _stack(r / "out" / "old", 5)  # the output folder inside the root is not a stack
    jobs = find_stacks([r], exclude=[r / "out"])
    assert [j.name for j in jobs] == ["a/b", "a/c9", "a/c10"]
    assert jobs[0].inputs == (str(r / "a" / "b"),)
    # a folder of frames given directly is one stack, named after itself; several roots prefix their name
    assert [j.name for j in find_stacks([r / "a" / "b"])] == ["b"]
    assert [j.name for j in find_stacks([r / "a" / "b", r / "a" / "c9"])] == ["b", "c9"]
    assert output_paths(jobs[0], tmp_path / "o", None, {"depth_map": True}) == {
        "image": tmp_path / "o" / "a" / "b.tif", "sidecar": tmp_path / "o" / "a" / "b.tif.json",
        "depth_map": tmp_path / "o" / "a" / "b.depth.tif"}


def test_stack_files_multipage_and_each_position(tmp_path):
    r = tmp_path / "root"
    (r / "plate").mkdir(parents=True)
    frames = synth.make_stack(n_frames=3, shape=(32, 40), seed=1).as_uint16()
    tifffile.imwrite(r / "zstack.tif", np.stack(frames))
    tifffile.imwrite(r / "single.tif", frames[0])
    with tifffile.TiffWriter(r / "plate" / "well.ome.tif", ome=True) as tif:
        for seed in (1, 2):
            planes = synth.make_microscopy_stack(n_planes=3, shape=(32, 32), offsets=(0, 0), seed=seed).planes
            tif.write(planes, photometric="minisblack", metadata={"axes": "ZCYX"})
    jobs = find_stacks(r, "files")
    assert [(j.name, j.position, j.microscopy) for j in jobs] == [
        ("plate/well_pos0", 0, True), ("plate/well_pos1", 1, True), ("zstack", None, False)]
    assert output_paths(jobs[0], tmp_path, None, {})["image"] == tmp_path / "plate" / "well_pos0.ome.tif"
    assert [j.name for j in find_stacks(r, "files", split_positions=False)] == ["plate/well", "zstack"]


def test_bad_roots_are_one_line(tmp_path, capsys):
    jpegs = tmp_path / "jpegs"
    jpegs.mkdir()
    for k in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(jpegs / f"f{k}.jpg")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [([str(tmp_path / "missing")], "no such file or folder"),
             ([str(empty)], "holds no stack"),
             ([str(jpegs), "--stacks", "files"], ("holds no multi-page TIFF, OME-TIFF or microscopy z-stack (3 single-"
                                                  "image files); for folders of frames use --stacks subfolders"))]
    for args, expected in cases:
        assert main(["batch", *args, "-o", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("gpustack: error: ") and expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_csv_list(tmp_path):
    _stack(tmp_path / "data" / "s1", 1)
    _stack(tmp_path / "data" / "s2", 2)
    csv = tmp_path / "list.csv"
    csv.write_text("input,name\n# a comment\n\ndata/s1,one/first\n"
                   f"{tmp_path / 'data' / 's2' / 'frame_1.tif'};data/s2/frame_2.tif,two.png\ndata/s1\n")
    jobs = read_list(csv)
    assert jobs == [StackJob("one/first", (str(tmp_path / "data" / "s1"),)),
                    StackJob("two", (str(tmp_path / "data/s2/frame_1.tif"), str(tmp_path / "data/s2/frame_2.tif")),
                             suffix=".png"),
                    StackJob("s1", (str(tmp_path / "data" / "s1"),))]
    csv.write_text("data/s1,../escape\n")
    with pytest.raises(gpustack.InputError, match="row 1: output name '../escape' must be a relative path"):
        read_list(csv)
    csv.write_text("data/s1,x\ndata/s2,X\n")
    with pytest.raises(gpustack.InputError, match="two stacks would write the same outputs 'X'"):
        read_list(csv)
    from gpustack.batching import jobs_of

    absolute = [str(Path(f).absolute()) for f in ("z.ome.tif", "f1.tif", "f2.tif")]  # as the workers see them
    assert jobs_of({"a/b": "z.ome.tif", "c": ["f1.tif", "f2.tif"]}) == [
        StackJob("a/b", (absolute[0],), microscopy=True), StackJob("c", tuple(absolute[1:]))]


def test_local_cluster_size():
    from gpustack.batching.cluster import local_size

    gib = 1024**3
    assert local_size(None, 2, 25 * gib) == (2, 1)  # one worker per core, one Numba thread each
    assert local_size(None, 16, 8 * gib) == (4, 4)  # at most one per 2 GiB: the cores shared out among them
    assert local_size(None, 1, 1 * gib) == (1, 1)
    assert local_size(3, 2, 25 * gib) == (3, 1)
    with pytest.raises(gpustack.InputError, match="n_workers must be a whole number of at least 1; got 0"):
        local_size(0)


def test_one_batch_at_a_time_per_output_folder(root, tmp_path):
    from gpustack.batching import Batch, runner

    out = tmp_path / "out"
    (out / runner.STATE_DIR).mkdir(parents=True)
    held = runner._lock(out / runner.STATE_DIR / "lock", out)  # another batch runs
    try:
        with pytest.raises(gpustack.InputError, match=f"another gpustack batch is writing to {out}; wait for it"):
            with Batch(find_stacks(root), out, backend="cpu"):
                pass
    finally:
        held.close()
    assert not (out / "batch.json").exists()


def test_missing_dask_says_what_to_install(root, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    assert main(["batch", str(root), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err == ("gpustack: error: gpustack batch needs Dask distributed, which is not installed (distributed is "
                   "missing); install it with: pip install 'gpustack[batch]'\n")


def test_unreachable_scheduler_is_one_line_within_seconds(root, tmp_path, capsys, monkeypatch):
    from gpustack.batching import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    t0 = time.monotonic()
    code = main(["batch", str(root), "-o", str(tmp_path / "out"), "--scheduler", f"tcp://127.0.0.1:{_free_port()}"])
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("gpustack: error: cannot reach the Dask scheduler at tcp://127.0.0.1:") and \
        "within 2 s" in err, err


def test_unwritable_output_folder_is_one_line(tmp_path):
    from unprivileged import run_python, shared_folder

    with shared_folder() as top:
        _stack(top / "root" / "s", 1)
        (top / "ro").mkdir()
        (top / "ro").chmod(0o555)
        res = run_python(["-m", "gpustack", "batch", str(top / "root"), "-o", str(top / "ro" / "out")])
    assert res.returncode == 1, res.stderr
    assert res.stderr.startswith(f"gpustack: error: cannot create the output folder {top / 'ro' / 'out'}: "
                                 f"Permission denied") and res.stderr.count("\n") == 1, res.stderr


# --------------------------------------------------------------------------- running


def test_batch_cli_outputs_equal_stack_and_a_bad_stack_fails_alone(root, tmp_path, capsys, client):
    """2 local workers, 6 stacks, one corrupt: the good ones' outputs are byte-identical to ``gpustack stack``,
    the bad one is reported with its error, exit 1, batch.json says so; a rerun skips the done ones."""
    bad = _corrupt(root / "slide2" / "broken")
    out = tmp_path / "out"
    code = main(["batch", str(root), "-o", str(out), "--n-workers", "2", "--depth-map", "--backend", "cpu", *ALIGN])
    captured = capsys.readouterr()
    assert code == 1
    assert "stack slide2/broken failed: " in captured.err and "Traceback" not in captured.err
    assert "6 stacks: 5 done, 1 failed; report " in captured.out, captured.out
    report = json.loads((out / "batch.json").read_text())
    by_name = {r["name"]: r for r in report["stacks"]}
    assert report["counts"] == {"done": 5, "skipped": 0, "failed": 1, "interrupted": 0, "not run": 0}
    assert report["status"] == "complete" and report["cluster"]["kind"] == "local"
    assert report["cluster"]["workers"] == 2 and report["options"]["align"] == "translation"
    assert {"gpustack", "dask", "distributed", "python"} <= set(report["versions"])
    assert by_name["slide2/broken"]["status"] == "failed"
    assert str(bad / "frame_2.tif") in by_name["slide2/broken"]["error"]
    assert by_name["slide1/fov_10"]["frames"] == 4 and by_name["slide1/fov_10"]["megapixels"] > 0
    assert not (out / "slide2" / "broken.tif").exists() and _temporaries(out) == []
    ref = tmp_path / "ref"
    ref.mkdir()
    for name in ("slide1/fov_10", "loose"):
        image, depth = ref / (name.replace("/", "_") + ".tif"), ref / (name.replace("/", "_") + ".depth.tif")
        assert main(["stack", str(root / name), "-o", str(image), "--depth-map", str(depth), "--backend", "cpu",
                     *ALIGN]) == 0
        assert (out / f"{name}.tif").read_bytes() == image.read_bytes(), name
        assert (out / f"{name}.depth.tif").read_bytes() == depth.read_bytes(), name
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.tif.json")}
    again = gpustack.batch(root, out, client=client, depth_map=True, backend="cpu", align="translation")
    assert sorted(r.status for r in again) == ["failed"] + ["skipped"] * 5
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.tif.json")} == mtimes  # nothing redone
    report = json.loads((out / "batch.json").read_text())
    assert report["counts"]["skipped"] == 5 and report["counts"]["failed"] == 1


def test_resume_skip_redo_and_what_makes_a_stack_run_again(tmp_path, client):
    root, out = tmp_path / "root", tmp_path / "out"
    for i, name in enumerate(["slide1/fov_1", "slide1/fov_2", "slide2/fov_1", "loose"]):
        _stack(root / name, i, n=3, shape=(32, 40))
    first = gpustack.batch(root, out, client=client, backend="cpu", align="translation")
    assert sorted(r.status for r in first) == ["done"] * 4
    sidecar = out / "slide1" / "fov_2.tif.json"
    assert json.loads(sidecar.read_text())["inputs"][0]["size"] > 0
    assert json.loads(sidecar.read_text())["options"]["maps"] is False  # no map asked for: none made
    assert json.loads(sidecar.read_text())["depth"] is None
    with pytest.raises(gpustack.InputError, match="maps is set per stack by the batch"):
        gpustack.batch(root, out, client=client, backend="cpu", maps=True)
    again = {r.name: r.status for r in gpustack.batch(root, out, client=client, backend="cpu", align="translation",
                                                        workers=1, queue_size=2)}  # these change no output byte
    assert set(again.values()) == {"skipped"}
    frame = root / "slide1" / "fov_2" / "frame_3.tif"
    os.utime(frame, ns=(frame.stat().st_atime_ns, frame.stat().st_mtime_ns + 10**9))  # an input touched
    (root / "slide2" / "fov_1" / "frame_3.tif").unlink()  # an input removed
    rerun = {r.name: r.status for r in gpustack.batch(root, out, client=client, backend="cpu", align="translation")}
    assert rerun == {"slide1/fov_1": "skipped", "slide1/fov_2": "done", "slide2/fov_1": "done", "loose": "skipped"}
    assert len(json.loads((out / "slide2" / "fov_1.tif.json").read_text())["frames"]) == 2
    one = {"slide1/fov_1": root / "slide1" / "fov_1"}  # a {name: inputs} dict
    changed = gpustack.batch(one, out, client=client, backend="cpu", align="translation", method="pyramid")
    assert [r.status for r in changed] == ["done"]  # another method: the stack runs again
    assert json.loads((out / "slide1" / "fov_1.tif.json").read_text())["options"]["method"] == "pyramid"
    redo = gpustack.batch(one, out, client=client, backend="cpu", align="translation", method="pyramid", redo=True)
    assert [r.status for r in redo] == ["done"]
    records = list(gpustack.batch_iter(one, out, client=client, backend="cpu", align="translation",
                                       method="pyramid", depth_map=True))
    assert [r.status for r in records] == ["done"] and (out / "slide1" / "fov_1.depth.tif").is_file()  # a new output
    assert json.loads((out / "slide1" / "fov_1.tif.json").read_text())["options"]["maps"] is True
    assert json.loads((out / "batch.json").read_text())["outputs"]["depth_map"] is True
    assert _temporaries(out) == []


CRASH = """
import os
from pathlib import Path
import gpustack.pipeline

_run = getattr(gpustack.pipeline, "unpatched_run", gpustack.pipeline.run)  # a preload may be loaded twice
gpustack.pipeline.unpatched_run = _run

def run(inputs, *args, **kwargs):
    name = str(inputs)
    if "crash_always" in name:
        os._exit(9)
    flag = Path({flag!r})
    if "crash_once" in name and flag.exists():
        flag.unlink()
        os._exit(9)
    return _run(inputs, *args, **kwargs)

gpustack.pipeline.run = run
"""


def test_a_dying_worker_is_retried_once_then_reported(tmp_path, warm):
    root = tmp_path / "root"
    for i, name in enumerate(["ok", "crash_once", "crash_always"]):
        _stack(root / name, i)
    flag = tmp_path / "crash.flag"
    flag.touch()
    preload = tmp_path / "crash_preload.py"
    preload.write_text(CRASH.format(flag=str(flag)))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0", silence_logs=50,
                                  preload=[str(preload)]) as cluster, distributed.Client(cluster) as c:
        records = {r.name: r for r in gpustack.batch(root, tmp_path / "out", client=c, backend="cpu", align="none")}
    assert records["ok"].status == "done" and (tmp_path / "out" / "ok.tif").is_file()
    assert records["crash_once"].status == "done", records["crash_once"].error
    assert records["crash_once"].attempts >= 2 and not flag.exists()  # 3 if its result was lost with a worker
    failed = records["crash_always"]
    assert failed.status == "failed" and failed.attempts == 2
    assert failed.error.startswith("the worker stacking it died 2 times (killed, out of memory, or a crash")
    assert _temporaries(tmp_path / "out") == []


SLOW = """
import time
import gpustack.pipeline

_run = getattr(gpustack.pipeline, "unpatched_run", gpustack.pipeline.run)  # a preload may be loaded twice
gpustack.pipeline.unpatched_run = _run

def run(*args, **kwargs):
    time.sleep(0.4)
    return _run(*args, **kwargs)

gpustack.pipeline.run = run
"""


def test_sigterm_stops_the_batch_and_a_rerun_does_the_rest(root, tmp_path, warm):
    out = tmp_path / "out"
    preload = tmp_path / "slow_preload.py"
    preload.write_text(SLOW)
    cmd = [sys.executable, "-m", "gpustack", "batch", str(root), "-o", str(out), "--n-workers", "1", "--backend", "cpu",
           *ALIGN]
    proc = subprocess.Popen(cmd, env=_env(DASK_DISTRIBUTED__WORKER__PRELOAD=f"['{preload}']"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(out.rglob("*.tif.json"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1] == ("gpustack: terminated; the stacks that finished are kept, none is "
                                               "half-written: run the same command again to do the rest")
    done = {p: p.stat().st_mtime_ns for p in out.rglob("*.tif.json")}
    assert 2 <= len(done) < 5 and _temporaries(out) == []
    assert len(list(out.rglob("*.tif"))) == len(done)  # every image with its sidecar, nothing half-written
    report = json.loads((out / "batch.json").read_text())
    assert report["status"] == "interrupted" and report["counts"]["done"] == len(done)
    rerun = subprocess.run(cmd + ["-v"], env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stderr.count("skipped ") == len(done) and rerun.stderr.count("done ") == 5 - len(done)
    assert {p: p.stat().st_mtime_ns for p in done} == done
    assert json.loads((out / "batch.json").read_text())["counts"] == {
        "done": 5 - len(done), "skipped": len(done), "failed": 0, "interrupted": 0, "not run": 0}


def test_an_external_cluster(root, tmp_path, warm, capsys):
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, then ``--scheduler ADDRESS``."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        procs += [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                                    "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"], env=_env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        with distributed.Client(address, timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
        out = tmp_path / "out"
        res = subprocess.run([sys.executable, "-m", "gpustack", "batch", str(root), "-o", str(out), "--scheduler",
                              address, "--backend", "cpu", *ALIGN, "-v"], env=_env(), capture_output=True, text=True,
                             timeout=180, check=False)
        assert res.returncode == 0, res.stderr
        report = json.loads((out / "batch.json").read_text())
        assert report["cluster"]["kind"] == "external" and report["cluster"]["workers"] == 2
        assert report["counts"]["done"] == 5
        workers = {r["worker"] for r in report["stacks"]}
        assert len(workers) == 2  # both workers took stacks
        assert main(["batch", str(root), "-o", str(out), "--scheduler", address, "--n-workers", "2"]) == 2
        assert "n_workers sizes the local cluster" in capsys.readouterr().err
    finally:
        for p in reversed(procs):  # the workers first: they would wait for a scheduler that is gone
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_each_position_of_a_microscopy_file_is_a_stack(tmp_path, client):
    path = tmp_path / "root" / "plate" / "well.ome.tif"
    path.parent.mkdir(parents=True)
    with tifffile.TiffWriter(path, ome=True) as tif:
        for seed in (1, 2):
            planes = synth.make_microscopy_stack(n_planes=3, shape=(40, 40), offsets=(0, 0), seed=seed).planes
            tif.write(planes, photometric="minisblack", metadata={"axes": "ZCYX", "PhysicalSizeZ": 2.0})
    out = tmp_path / "out"
    records = gpustack.batch(tmp_path / "root", out, client=client, stacks_from="files", backend="cpu", align="none",
                             height_map=True)
    assert sorted((r.name, r.status, r.position) for r in records) == [("plate/well_pos0", "done", 0),
                                                                       ("plate/well_pos1", "done", 1)]
    assert (out / "plate" / "well_pos1.height.ome.tif").is_file()
    one = gpustack.stack(path, position=1, backend="cpu", align="none")
    np.testing.assert_array_equal(tifffile.imread(out / "plate" / "well_pos1.ome.tif"), np.moveaxis(one.image, -1, 0))
    again = gpustack.batch(tmp_path / "root", out, client=client, stacks_from="files", backend="cpu", align="none",
                           height_map=True)
    assert [r.status for r in again] == ["skipped", "skipped"]
