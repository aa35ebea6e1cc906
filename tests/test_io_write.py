"""Writing outputs: gpustack.io.write."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from gpustack.errors import InputError, OutputError
from gpustack.io import (
    StagedOutputs,
    check_outputs,
    list_frames,
    read_frame,
    sidecar_path,
    write_depth,
    write_image,
    write_sidecar,
)
from gpustack.io import write as write_module

RNG = np.random.default_rng(11)
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_block():
    exif = Image.Exif()
    exif[271] = "Canon"
    exif[272] = "EOS R5"
    exif[274] = 1
    exif[306] = "2024:06:01 09:00:00"
    exif.get_ifd(0x8769)[36867] = "2024:05:01 10:11:12"
    exif.get_ifd(0x8769)[33434] = 0.01  # ExposureTime
    return exif.tobytes()


def read_back(path):
    [source] = list_frames([path])
    return read_frame(source, 0)


def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- check_outputs


def test_output_is_an_input(tmp_path):
    frame = tmp_path / "a.tif"
    frame.write_bytes(b"II*\0")
    with pytest.raises(InputError, match=r"output .*a\.tif is also an input frame; choose another output path"):
        check_outputs([tmp_path / "sub" / ".." / "a.tif"], [frame], overwrite=True)
    os.link(frame, tmp_path / "hard.tif")  # same file under another name
    with pytest.raises(InputError, match="also an input frame"):
        check_outputs([tmp_path / "hard.tif"], [frame], overwrite=True)
    check_outputs([tmp_path / "b.tif", None], [frame, None], overwrite=False)


def test_two_outputs_the_same(tmp_path):
    with pytest.raises(InputError, match=r"given twice"):
        check_outputs([tmp_path / "o.tif", tmp_path / "." / "o.tif"], [], overwrite=False)


def test_output_folder_missing(tmp_path):
    out = tmp_path / "missing" / "o.tif"
    with pytest.raises(OutputError, match=r"folder .*missing does not exist; create it or choose another path"):
        check_outputs([out], [], overwrite=False)


def test_output_exists(tmp_path):
    out = tmp_path / "o.tif"
    out.write_bytes(b"old")
    with pytest.raises(OutputError, match=r"output .*o\.tif exists; pass --overwrite"):
        check_outputs([out], [], overwrite=False)
    check_outputs([out], [], overwrite=True)
    with pytest.raises(OutputError, match="is a folder"):
        check_outputs([tmp_path], [], overwrite=True)


def test_output_folder_read_only(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user that can write anywhere (root)")
        with pytest.raises(OutputError, match=r"folder .*ro is not writable"):
            check_outputs([folder / "o.tif"], [], overwrite=False)
        with pytest.raises(OutputError, match="cannot write"):
            write_image(folder / "o.tif", np.zeros((4, 4, 3), np.uint8), fmt="tiff")
    finally:
        folder.chmod(0o755)


def test_output_folder_not_writable_message(tmp_path, monkeypatch):
    # the same check as above, also where the tests run as root
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    with pytest.raises(OutputError, match=r"folder .* is not writable; check its permissions or choose another"):
        check_outputs([tmp_path / "o.tif"], [], overwrite=False)


def test_sidecar_path():
    assert sidecar_path(Path("out/fused.tif")) == Path("out/fused.tif.json")
    assert sidecar_path("fused.png").name == "fused.png.json"


# --------------------------------------------------------------------------- write_image


@pytest.mark.parametrize("fmt, ext", [("tiff", ".tif"), ("png", ".png")])
@pytest.mark.parametrize("dtype, channels", [(np.uint8, 1), (np.uint8, 3), (np.uint16, 1), (np.uint16, 3)])
def test_lossless_round_trip(tmp_path, fmt, ext, dtype, channels):
    image = RNG.integers(0, np.iinfo(dtype).max + 1, (20, 30, channels)).astype(dtype)
    path = tmp_path / f"o{ext}"
    write_image(path, image, fmt=fmt, exif=exif_block(), icc=ICC, metadata={"gpustack": "0.1", "frames": 3})
    frame = read_back(path)
    assert frame.data.dtype == dtype and frame.data.shape == image.shape
    np.testing.assert_array_equal(frame.data, image)
    assert frame.icc == ICC
    assert frame.info["capture_time"] == "2024-05-01T10:11:12"
    assert leftovers(tmp_path) == []


def test_png_carries_exif_and_text(tmp_path):
    for dtype in (np.uint8, np.uint16):
        path = tmp_path / f"o{dtype.__name__}.png"
        write_image(path, np.zeros((8, 8, 3), dtype), fmt="png", exif=exif_block(), metadata={"note": "ünïcode"})
        with Image.open(path) as im:
            exif = im.getexif()
            assert exif[272] == "EOS R5" and float(exif.get_ifd(0x8769)[33434]) == 0.01
            assert im.info["note"] == "ünïcode"


def test_tiff_carries_ifd0_tags(tmp_path):
    path = tmp_path / "o.tif"
    write_image(path, np.zeros((8, 8, 3), np.uint16), fmt="tiff", exif=exif_block(), metadata={"k": 1})
    with tifffile.TiffFile(path) as tf:
        tags = {tag.name: tag.value for tag in tf.pages[0].tags}
        assert tags["Make"] == "Canon" and tags["Model"] == "EOS R5"
        assert tags["DateTime"] == "2024:05:01 10:11:12"  # the capture time, not the source's DateTime
        assert tags["Software"] == "gpustack" and json.loads(tags["ImageDescription"]) == {"k": 1}
        assert tags["Compression"] == tifffile.COMPRESSION.ADOBE_DEFLATE and len(tf.pages) == 1


def test_jpeg(tmp_path):
    smooth = np.repeat(np.repeat(RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8), 8, 0), 8, 1)
    path = tmp_path / "o.jpg"
    write_image(path, smooth, fmt="jpeg", exif=exif_block(), icc=ICC, metadata={"k": 1})
    frame = read_back(path)
    assert frame.kind == "jpeg" and frame.icc == ICC and frame.info["capture_time"] == "2024-05-01T10:11:12"
    assert np.abs(frame.data.astype(int) - smooth).mean() < 3
    with Image.open(path) as im:
        assert json.loads(im.info["comment"]) == {"k": 1}
    with pytest.raises(InputError, match="JPEG holds 8 bits per sample"):
        write_image(tmp_path / "p.jpg", smooth.astype(np.uint16), fmt="jpeg")


def test_bad_images(tmp_path):
    with pytest.raises(InputError, match="expected uint8 or uint16"):
        write_image(tmp_path / "o.tif", np.zeros((4, 4, 3), np.float32), fmt="tiff")
    with pytest.raises(InputError, match=r"shape \(4, 4, 2\)"):
        write_image(tmp_path / "o.png", np.zeros((4, 4, 2), np.uint8), fmt="png")
    with pytest.raises(InputError, match=r"shape \(4, 4, 9\); expected \(H, W, C\) with 1 to 8 channels$"):
        write_image(tmp_path / "o.tif", np.zeros((4, 4, 9), np.uint8), fmt="tiff")
    with pytest.raises(InputError, match="unknown format"):
        write_image(tmp_path / "o.tif", np.zeros((4, 4, 3), np.uint8), fmt="bmp")
    assert list(tmp_path.iterdir()) == []


def test_exists_without_overwrite(tmp_path):
    path = tmp_path / "o.png"
    path.write_bytes(b"old")
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        write_image(path, np.zeros((4, 4, 3), np.uint8), fmt="png")
    assert path.read_bytes() == b"old"
    write_image(path, np.full((4, 4, 3), 9, np.uint8), fmt="png", overwrite=True)
    assert read_back(path).data[0, 0, 0] == 9


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def broken_imwrite(f, *args, **kwargs):
        f.write(b"II*\0" + b"\0" * 1000)  # half a file, then the encoder dies
        raise RuntimeError("encoder died")

    monkeypatch.setattr(tifffile, "imwrite", broken_imwrite)
    with pytest.raises(RuntimeError, match="encoder died"):
        write_image(tmp_path / "o.tif", np.zeros((4, 4, 3), np.uint8), fmt="tiff")
    assert list(tmp_path.iterdir()) == []
    old = tmp_path / "old.tif"
    old.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        write_depth(old, np.zeros((4, 4), np.float32), overwrite=True)
    assert old.read_bytes() == b"previous result" and leftovers(tmp_path) == []


def test_disk_error_becomes_output_error(tmp_path, monkeypatch):
    def full_disk(f, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", full_disk)
    with pytest.raises(OutputError, match=r"cannot write .*o\.tif: No space left on device"):
        write_image(tmp_path / "o.tif", np.zeros((4, 4, 3), np.uint8), fmt="tiff")
    assert list(tmp_path.iterdir()) == []


def test_no_clobber_when_output_appears_during_write(tmp_path, monkeypatch):
    path = tmp_path / "o.png"
    real_encode = write_module._encode_png

    def racing_encode(f, *args):
        path.write_bytes(b"someone else")  # another process creates the output meanwhile
        real_encode(f, *args)

    monkeypatch.setattr(write_module, "_encode_png", racing_encode)
    with pytest.raises(OutputError, match="appeared while it was written"):
        write_image(path, np.zeros((4, 4, 3), np.uint8), fmt="png")
    assert path.read_bytes() == b"someone else" and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- staged outputs: all or none


IMG = np.zeros((4, 4, 3), np.uint8)


def _stage_three(tmp_path, stage, overwrite=False):
    write_image(tmp_path / "a.png", IMG, fmt="png", overwrite=overwrite, stage=stage)
    write_depth(tmp_path / "b.tif", np.zeros((4, 4), np.float32), overwrite=overwrite, stage=stage)
    write_sidecar(tmp_path / "c.json", {"k": 1}, overwrite=overwrite, stage=stage)


def test_staged_outputs_appear_only_at_the_commit(tmp_path):
    with StagedOutputs() as stage:
        _stage_three(tmp_path, stage)
        assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []
        assert len(leftovers(tmp_path)) == 3
        stage.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.tif", "c.json"]
    with StagedOutputs() as stage:  # leaving the block without a commit deletes the temporaries
        write_image(tmp_path / "d.png", IMG, fmt="png", stage=stage)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.tif", "c.json"]


def test_a_failed_publish_undoes_the_others(tmp_path, monkeypatch):
    """The second output appears meanwhile (no overwrite): the first, already moved, is removed
    again; nothing is published and no temporary is left."""
    real_link = os.link

    def link(src, dst, **kw):
        if Path(dst).name == "b.tif":
            Path(dst).write_bytes(b"someone else's")
        return real_link(src, dst, **kw)

    monkeypatch.setattr(os, "link", link)
    with StagedOutputs() as stage:
        _stage_three(tmp_path, stage)
        with pytest.raises(OutputError, match=r"b.tif appeared while it was written"):
            stage.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tif"]
    assert (tmp_path / "b.tif").read_bytes() == b"someone else's"


@pytest.mark.parametrize("failure", [KeyboardInterrupt, PermissionError])
def test_an_interrupted_commit_restores_the_files_it_replaced(tmp_path, monkeypatch, failure):
    for name in ("a.png", "b.tif", "c.json"):
        (tmp_path / name).write_bytes(b"old " + name.encode())
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == 2:  # between the first output and the second: Ctrl-C, or a permission change
            raise failure(13, "Permission denied") if failure is PermissionError else failure()
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with StagedOutputs() as stage:
        _stage_three(tmp_path, stage, overwrite=True)
        with pytest.raises(KeyboardInterrupt if failure is KeyboardInterrupt else OutputError):
            stage.commit()
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.tif", "c.json"]  # no temporary, no backup
    for name in ("a.png", "b.tif", "c.json"):
        assert (tmp_path / name).read_bytes() == b"old " + name.encode()


def test_a_failed_write_discards_the_whole_stage(tmp_path, monkeypatch):
    def full_disk(f, data, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(write_module, "_tiff", full_disk)
    with StagedOutputs() as stage:
        write_image(tmp_path / "a.png", IMG, fmt="png", stage=stage)
        with pytest.raises(OutputError, match=r"cannot write .*b.tif: No space left on device"):
            write_depth(tmp_path / "b.tif", np.zeros((4, 4), np.float32), stage=stage)
        stage.commit()  # nothing left to publish
    assert list(tmp_path.iterdir()) == []


def test_cancelled_outputs_are_deleted_and_never_published(tmp_path, monkeypatch):
    """What a supervised worker does when its parent is gone: delete every temporary of its runs;
    a commit after that publishes nothing."""
    monkeypatch.setattr(write_module, "_cancelled", False)
    with StagedOutputs() as stage:
        _stage_three(tmp_path, stage)
        assert len(leftovers(tmp_path)) == 3
        write_module.cancel_outputs()
        assert list(tmp_path.iterdir()) == []
        with pytest.raises(OutputError, match="process that started this run is gone"):
            stage.commit()
        with pytest.raises(OutputError, match="process that started this run is gone"):
            write_image(tmp_path / "d.png", IMG, fmt="png", stage=stage)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- depth and sidecar


def test_depth_round_trip(tmp_path):
    depth = (RNG.random((20, 30)) * 9).astype(np.float32)
    path = tmp_path / "depth.tif"
    write_depth(path, depth, description="frame index")
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        assert page.dtype == np.float32 and page.description == "frame index"
        np.testing.assert_array_equal(page.asarray(), depth)
    with pytest.raises(OutputError, match="exists"):
        write_depth(path, depth)
    write_depth(path, depth.astype(np.float64) + 1, overwrite=True)
    np.testing.assert_array_equal(tifffile.imread(path), depth + 1)
    with pytest.raises(InputError, match=r"expected a float array \(H, W\) or \(C, H, W\)"):
        write_depth(tmp_path / "d2.tif", np.zeros((4, 4), np.uint8))
    write_depth(tmp_path / "d3.tif", np.stack([depth, depth + 1]))  # per channel: a page each
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "d3.tif"), np.stack([depth, depth + 1]))


def test_sidecar(tmp_path):
    path = tmp_path / "o.tif.json"
    data = {
        "frames": [Path("a.tif"), Path("b.tif")],
        "n": np.int64(3),
        "score": np.float32(0.5),
        "bad": float("nan"),
        "matrix": np.eye(2, dtype=np.float32),
        "flag": np.bool_(True),
        "nested": {1: (1, 2)},
        "blob": b"\0" * 10,
    }
    write_sidecar(path, data)
    assert json.loads(path.read_text("utf-8")) == {
        "frames": ["a.tif", "b.tif"],
        "n": 3,
        "score": 0.5,
        "bad": None,
        "matrix": [[1.0, 0.0], [0.0, 1.0]],
        "flag": True,
        "nested": {"1": [1, 2]},
        "blob": "<10 bytes>",
    }
    assert path.read_text().startswith('{\n  "frames"')
    with pytest.raises(OutputError, match="exists"):
        write_sidecar(path, {})
