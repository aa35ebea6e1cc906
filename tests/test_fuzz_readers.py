"""A seeded fuzz of the frame readers (tests/fuzz.py): a few hundred mutated and truncated JPEG,
PNG, TIFF and DNG files, each read as ``gpustack stack`` would in a worker process with a time
limit. Each must be read, or refused with one DecodeError/InputError line naming it: never a
traceback, a hang, a crash, or another library's line on stderr. ``bench/fuzz_readers.py`` runs
the same for as many files as asked."""


import fuzz

SEED = 2024
CASES = 600


def test_mutated_files_are_read_or_refused_in_one_line(tmp_path):
    seeds = fuzz.write_seeds(tmp_path / "seeds")
    assert {p.suffix for p in seeds} == {".jpg", ".png", ".tif", ".dng"}
    how = fuzz.write_cases(seeds, tmp_path / "cases", CASES, SEED)
    outcomes, stderr = fuzz.read_cases(list(how))
    bad = fuzz.failures(outcomes, how)
    assert bad == [], "\n".join(bad[:20])
    assert stderr == "", stderr
    kinds = {o.outcome for o in outcomes}
    assert kinds == {"read", "refused"}, kinds  # the mutations are neither all harmless nor all fatal
    for suffix in (".jpg", ".png", ".tif", ".dng"):  # every format has files refused and files read
        assert {o.outcome for o in outcomes if o.path.suffix == suffix} == {"read", "refused"}, suffix


HOOK = """
import os, time
import gpustack.io.frames as frames
_read = frames.read_frame
def read_frame(source, *args, **kwargs):
    name = os.path.basename(str(source.path))
    if name.startswith("hang"):
        time.sleep(600)
    if name.startswith("crash"):
        os.abort()
    if name.startswith("boom"):
        raise ValueError("an exception no reader should let out")
    if name.startswith("noisy"):
        import logging, warnings
        logging.getLogger("tifffile").warning("a third-party record")
        warnings.warn("a third-party warning")  # from this file, outside gpustack: debug only
        os.write(2, b"a line printed by C code\\n")
    return _read(source, *args, **kwargs)
frames.read_frame = read_frame
import gpustack.io
gpustack.io.read_frame = read_frame
"""


def test_the_harness_tells_every_failure(tmp_path):
    """What the fuzz must catch, it catches: a traceback, a hang, a crash of the worker (and the
    files after each are still read), a line on stderr that is not ours."""
    seeds = fuzz.write_seeds(tmp_path / "seeds")
    jpg = next(p for p in seeds if p.suffix == ".jpg").read_bytes()
    cases = tmp_path / "cases"
    cases.mkdir()
    names = ["ok1", "boom", "hang", "ok2", "crash", "ok3", "noisy"]
    paths = []
    for name in names:
        paths.append(cases / f"{name}.jpg")
        paths[-1].write_bytes(jpg)
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(HOOK)
    outcomes, stderr = fuzz.read_cases(paths, time_limit=3, hook=tmp_path / "hook")
    assert [o.outcome for o in outcomes] == ["read", "traceback", "hang", "read", "crash", "read", "read"]
    assert stderr == "a line printed by C code\n"
    bad = fuzz.failures(outcomes, {p: p.stem for p in paths})
    assert [line.split(" ")[0] for line in bad] == ["boom", "hang", "crash"]
