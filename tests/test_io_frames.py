"""Listing and decoding frames: gpustack.io.frames and gpustack.io.raw."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageFile

from gpustack.errors import DecodeError, InputError
from gpustack.io import list_frames, read_frame, read_raw, sources_from_arrays

RAW_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "raw" / "RAW_KODAK_DC50.KDC"
RNG = np.random.default_rng(7)


def rgb8(h=24, w=32):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def rgb16(h=24, w=32):
    return RNG.integers(0, 65536, (h, w, 3), dtype=np.uint16)


def save_jpeg(path, array=None, when=None, subsec=None):
    exif = Image.Exif()
    if when:
        exif.get_ifd(0x8769)[36867] = when
        if subsec:
            exif.get_ifd(0x8769)[37521] = subsec
    Image.fromarray(rgb8() if array is None else array).save(path, "JPEG", quality=90, exif=exif.tobytes())
    return path


def read_path(path, page=0):
    sources = [s for s in list_frames([path]) if s.page == page]
    return read_frame(sources[0], 3)


def names(sources):
    return [s.name for s in sources]


# --------------------------------------------------------------------------- listing errors


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match=r"no such file or folder: .*nope\.jpg; check the path"):
        list_frames([tmp_path / "nope.jpg"])


def test_no_inputs():
    with pytest.raises(InputError, match="no frames given"):
        list_frames([])


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(InputError, match=r"folder .* holds no image files \(\.jpg, \.png, \.tif, or camera RAW\)"):
        list_frames([tmp_path])


def test_glob_matching_nothing(tmp_path):
    with pytest.raises(InputError, match="matches nothing"):
        list_frames([str(tmp_path / "*.tif")])


def test_same_file_twice(tmp_path):
    path = save_jpeg(tmp_path / "a.jpg")
    with pytest.raises(InputError, match=r"a\.jpg is given twice"):
        list_frames([path, path])
    with pytest.raises(InputError, match="given twice"):  # once explicitly, once through its folder
        list_frames([tmp_path, path])


LIST_AND_READ = """
import sys
from gpustack.errors import GpustackError
from gpustack.io import list_frames, read_frame
try:
    for source in list_frames(sys.argv[1:]):
        read_frame(source, 0)
except GpustackError as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("case", ["folder", "file", "raw_file", "parent"])
def test_what_cannot_be_read_is_one_decode_error_naming_it(case):
    """A folder that cannot be listed (r missing, as ``chmod 311``), a file that cannot be opened,
    a path inside a folder that cannot be entered: DecodeError (exit 1 in the CLI) naming it. Run
    as an unprivileged user: root reads everything."""
    from unprivileged import run_python, shared_folder

    with shared_folder() as top:
        folder = top / "in"
        folder.mkdir()
        for k in range(2):
            save_jpeg(folder / f"f{k}.jpg")
        (folder / "f2.dng").write_bytes(b"II*\0" + bytes(100))
        target, arg = {"folder": (folder, folder), "file": (folder / "f1.jpg", folder),
                       "raw_file": (folder / "f2.dng", folder), "parent": (folder, folder / "f0.jpg")}[case]
        target.chmod({"folder": 0o311, "parent": 0o600}.get(case, 0o200))
        res = run_python(["-c", LIST_AND_READ, str(arg)])
    assert res.returncode == 0 and res.stderr == "", res.stderr
    named = target if case != "parent" else folder / "f0.jpg"
    what = "cannot list the folder" if case == "folder" else "cannot read"
    assert res.stdout.startswith(f"DecodeError {named}: {what}: Permission denied; "), res.stdout
    assert len(res.stdout.splitlines()) == 1


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links")
def test_broken_symbolic_links_are_skipped_with_a_warning(tmp_path):
    for k in range(2):
        save_jpeg(tmp_path / f"f{k}.jpg")
    (tmp_path / "f2.jpg").symlink_to(tmp_path / "gone.jpg")  # dangling
    (tmp_path / "f3.jpg").symlink_to(tmp_path / "f3.jpg")  # loops
    (tmp_path / "f4.jpg").symlink_to(tmp_path / "f0.jpg")  # fine (and a repeat of f0)
    (tmp_path / "notes.txt").symlink_to(tmp_path / "nothing.txt")  # not an image name: no word about it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InputError, match="given twice"):
            list_frames([tmp_path])
    said = sorted(str(w.message) for w in caught)
    assert said == [f"{tmp_path / 'f2.jpg'} is a symbolic link to {tmp_path / 'gone.jpg'}, which does not exist; "
                    "skipped",
                    f"{tmp_path / 'f3.jpg'} is a symbolic link that loops (it leads back to itself); skipped"], said
    (tmp_path / "f4.jpg").unlink()
    with warnings.catch_warnings(record=True) as caught:  # the same through a glob pattern
        warnings.simplefilter("always")
        assert names(list_frames([str(tmp_path / "f*.jpg")])) == ["f0.jpg", "f1.jpg"]
    assert sorted(str(w.message) for w in caught) == said
    with pytest.raises(InputError, match=r"f2.jpg is a symbolic link to .*gone.jpg, which does not exist; check "
                                         r"the path$"):
        list_frames([tmp_path / "f2.jpg"])


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "frame.jpg"
    path.write_text("not really a picture\n")
    with pytest.raises(DecodeError, match=r"frame\.jpg: not an image file \(found text 'not really a'\); remove it"):
        list_frames([path])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError, match="found an empty file"):
        list_frames([empty])
    gif = tmp_path / "x.tif"
    Image.fromarray(rgb8()).save(gif, "GIF")
    with pytest.raises(DecodeError, match="found a GIF image"):
        list_frames([gif])


def test_format_is_told_by_content_not_extension(tmp_path):
    path = tmp_path / "really_a_png.tif"
    data = rgb8()
    Image.fromarray(data).save(path, "PNG")
    frame = read_path(path)
    assert frame.kind == "png"
    np.testing.assert_array_equal(frame.data, data)


# --------------------------------------------------------------------------- ordering


def test_folder_skips_other_and_hidden_files(tmp_path):
    for name in ("b.jpg", "a.JPG", "c.png"):
        Image.fromarray(rgb8()).save(tmp_path / name, "PNG" if name.endswith("png") else "JPEG")
    (tmp_path / "meta.json").write_text("{}")
    (tmp_path / "._a.JPG").write_bytes(b"\0\5\26\7 AppleDouble")  # macOS resource fork
    (tmp_path / "sub").mkdir()
    save_jpeg(tmp_path / "sub" / "d.jpg")
    assert names(list_frames([tmp_path])) == ["a.JPG", "b.jpg", "c.png"]


def test_natural_sort_and_reverse(tmp_path):
    for name in ("frame10.jpg", "frame2.jpg", "Frame1.jpg", "frame02b.jpg"):
        save_jpeg(tmp_path / name)
    expected = ["Frame1.jpg", "frame2.jpg", "frame02b.jpg", "frame10.jpg"]
    assert names(list_frames([tmp_path])) == expected
    assert names(list_frames([str(tmp_path / "*.jpg")], order="reverse")) == expected[::-1]
    # the order of the inputs does not matter, the whole list is sorted
    shuffled = [tmp_path / n for n in ("frame10.jpg", "Frame1.jpg", "frame02b.jpg", "frame2.jpg")]
    assert names(list_frames(shuffled)) == expected


def test_unknown_order(tmp_path):
    with pytest.raises(InputError, match="order must be one of"):
        list_frames([save_jpeg(tmp_path / "a.jpg")], order="size")


def test_exif_order(tmp_path):
    save_jpeg(tmp_path / "a.jpg", when="2024:05:01 10:00:03")
    save_jpeg(tmp_path / "b.jpg", when="2024:05:01 10:00:01", subsec="50")
    save_jpeg(tmp_path / "c.jpg", when="2024:05:01 10:00:01", subsec="5")  # same second: .5 == .50, name breaks tie
    save_jpeg(tmp_path / "d.jpg", when="2024:05:01 10:00:01", subsec="25")
    save_jpeg(tmp_path / "e.jpg")  # no capture time
    save_jpeg(tmp_path / "0.jpg")  # no capture time
    with pytest.warns(UserWarning, match="2 of 6 frames have no EXIF capture time") as caught:
        order = names(list_frames([tmp_path], order="exif"))
    assert order == ["d.jpg", "b.jpg", "c.jpg", "a.jpg", "0.jpg", "e.jpg"]
    assert caught[0].filename == __file__  # stacklevel points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert names(list_frames([tmp_path / "a.jpg", tmp_path / "b.jpg"], order="exif")) == ["b.jpg", "a.jpg"]


def test_capture_time_in_info(tmp_path):
    frame = read_path(save_jpeg(tmp_path / "a.jpg", when="2024:05:01 10:00:03", subsec="07"))
    assert frame.info["capture_time"] == "2024-05-01T10:00:03.07"
    assert frame.exif.startswith(b"Exif\0\0")


# --------------------------------------------------------------------------- multi-page TIFF


def test_multipage_tiff_is_a_zstack(tmp_path):
    stack = RNG.integers(0, 65536, (4, 20, 30, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", stack, photometric="rgb")
    sources = list_frames([tmp_path / "z.tif"])
    assert names(sources) == [f"z.tif[{i}]" for i in range(4)]
    assert [s.page for s in sources] == [0, 1, 2, 3]
    frame = read_frame(sources[2], 2)
    assert frame.name == "z.tif[2]" and frame.kind == "tiff" and frame.transfer == "srgb"
    np.testing.assert_array_equal(frame.data, stack[2])
    assert names(list_frames([tmp_path / "z.tif"], order="reverse"))[0] == "z.tif[3]"


def test_multipage_tiff_pages_of_different_sizes(tmp_path):
    with tifffile.TiffWriter(tmp_path / "mixed.tif") as tw:
        tw.write(rgb8(20, 30), photometric="rgb")
        tw.write(rgb8(10, 30), photometric="rgb")
    with pytest.raises(InputError, match="2 pages of 2 different shapes"):
        list_frames([tmp_path / "mixed.tif"])


def test_tiff_thumbnail_page_is_skipped(tmp_path):
    data = rgb8(20, 30)
    with tifffile.TiffWriter(tmp_path / "t.tif") as tw:
        tw.write(data, photometric="rgb")
        tw.write(rgb8(5, 7), photometric="rgb", subfiletype=1)  # reduced-resolution
    sources = list_frames([tmp_path / "t.tif"])
    assert names(sources) == ["t.tif"]
    np.testing.assert_array_equal(read_frame(sources[0], 0).data, data)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("L", lambda a: a[:, :, :1]),
        ("RGB", lambda a: a[:, :, :3]),
        ("RGBA", lambda a: a[:, :, :3]),
        ("LA", lambda a: a[:, :, :1]),
    ],
)
def test_png_8bit_round_trip(tmp_path, mode, expected):
    base = RNG.integers(0, 256, (24, 32, 4), dtype=np.uint8)
    pixels = {"L": base[:, :, 0], "RGB": base[:, :, :3], "RGBA": base, "LA": base[:, :, :2]}[mode]
    Image.fromarray(pixels, mode).save(tmp_path / "f.png")
    frame = read_path(tmp_path / "f.png")
    assert frame.data.dtype == np.uint8 and frame.data.flags.c_contiguous
    np.testing.assert_array_equal(frame.data, expected(base))
    assert frame.kind == "png" and frame.transfer == "srgb" and frame.info["bits"] == 8 and frame.index == 3


def test_png_palette(tmp_path):
    image = Image.fromarray(rgb8()).quantize(16)
    image.save(tmp_path / "p.png")
    frame = read_path(tmp_path / "p.png")
    np.testing.assert_array_equal(frame.data, np.asarray(image.convert("RGB")))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png_16bit_round_trip(tmp_path, channels):
    import imagecodecs

    data = RNG.integers(0, 65536, (24, 32, channels), dtype=np.uint16)
    (tmp_path / "f.png").write_bytes(imagecodecs.png_encode(data if channels > 1 else data[:, :, 0]))
    frame = read_path(tmp_path / "f.png")
    assert frame.data.dtype == np.uint16 and frame.info["bits"] == 16
    np.testing.assert_array_equal(frame.data, data[:, :, : min(channels, 3)])


def test_icc_is_read(tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(rgb8()).save(tmp_path / "f.png", icc_profile=icc)
    Image.fromarray(rgb8()).save(tmp_path / "f.jpg", icc_profile=icc)
    tifffile.imwrite(tmp_path / "f.tif", rgb16(), photometric="rgb", iccprofile=icc)
    for name in ("f.png", "f.jpg", "f.tif"):
        assert read_path(tmp_path / name).icc == icc, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_float_tiff(tmp_path, dtype):
    data = RNG.random((20, 30, 3)).astype(dtype)
    tifffile.imwrite(tmp_path / "f.tif", data, photometric="rgb")
    frame = read_path(tmp_path / "f.tif")
    assert frame.data.dtype == np.float32 and frame.transfer == "linear"
    np.testing.assert_array_equal(frame.data, data.astype(np.float32))


def test_tiff_layouts(tmp_path):
    data = rgb16()
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(data, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_path(tmp_path / "planar.tif").data, data)
    tifffile.imwrite(tmp_path / "gray.tif", data[:, :, 0], photometric="minisblack", compression="zlib")
    gray = read_path(tmp_path / "gray.tif")
    assert gray.data.shape == (24, 32, 1)
    np.testing.assert_array_equal(gray.data[:, :, 0], data[:, :, 0])
    rgba = RNG.integers(0, 256, (24, 32, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(read_path(tmp_path / "rgba.tif").data, rgba[:, :, :3])


def test_12bit_tiff_is_scaled_to_full_range(tmp_path):
    data = np.array([[0, 1, 2048, 4095]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "t.tif", data, photometric="minisblack", bitspersample=12)
    frame = read_path(tmp_path / "t.tif")
    assert frame.info["bits"] == 12
    np.testing.assert_array_equal(frame.data[0, :, 0], [0, 16, 32776, 65535])


def test_unsupported_tiff_dtype(tmp_path):
    tifffile.imwrite(tmp_path / "u32.tif", np.zeros((8, 8), np.uint32))
    with pytest.raises(DecodeError, match=r"u32\.tif: holds uint32 samples .*reads uint8, uint16 and float TIFFs"):
        read_path(tmp_path / "u32.tif")


# --------------------------------------------------------------------------- corrupt files


def chopped(path, keep=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_truncated_jpeg(tmp_path, monkeypatch):
    path = chopped(save_jpeg(tmp_path / "t.jpg", rgb8(64, 64)))
    sources = list_frames([path])  # listing only sniffs
    with pytest.raises(DecodeError, match=r"t\.jpg: cannot decode: .*truncated.*re-copy it or remove it") as info:
        read_frame(sources[0], 0)
    assert info.value.__cause__ is not None
    # someone in the process switched Pillow to pad truncated images: still an error
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DecodeError, match="truncated"):
        read_frame(sources[0], 0)


def test_truncated_png_and_tiff(tmp_path):
    Image.fromarray(rgb8(64, 64)).save(tmp_path / "t.png")
    tifffile.imwrite(tmp_path / "t.tif", rgb16(64, 64), photometric="rgb", compression="zlib")
    tifffile.imwrite(tmp_path / "u.tif", rgb16(64, 64), photometric="rgb")
    for name in ("t.png", "t.tif", "u.tif"):
        path = chopped(tmp_path / name)
        with pytest.raises(DecodeError, match=r"cannot decode: .*the file may be truncated or corrupt"):
            read_path(path)


def test_tiff_with_broken_header(tmp_path):
    path = tmp_path / "h.tif"
    path.write_bytes(b"II*\0" + b"\xff" * 20)
    with pytest.raises(DecodeError, match=r"h\.tif: cannot decode"):
        read_path(path)


def _retagged(path, tags, **tiff):
    """A 48x64 RGB uint16 TIFF at ``path`` whose tags (name -> value, LONG-sized) are then
    overwritten in place, as a corrupt file would hold them."""
    import struct

    tifffile.imwrite(path, rgb16(48, 64), photometric="rgb", **tiff)
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        places = {name: (page.tags[name].valueoffset, page.tags[name].dtype) for name in tags}
    for name, value in tags.items():
        at, dtype = places[name]
        struct.pack_into("<H" if dtype == 3 else "<I", data, at, value)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("tags, tiff, says", [
    ({"ImageWidth": 200000, "ImageLength": 200000}, {}, r"declares a 200000x200000 image \(240.0 GB decoded\), "
                                                        r"more than half this machine's memory"),
    ({"ImageLength": 4000000}, {"rowsperstrip": 8}, r"cannot decode: its size \(64x4000000\) needs 500000 strips or "
                                                    r"tiles but it holds 6"),
    ({"ImageWidth": 0}, {}, r"cannot decode: the image decoded to an array of shape \(0,\)"),
    ({"TileWidth": 4294901760}, {"tile": (16, 16)}, r"declares a 4294901760x16 image"),
])
def test_a_corrupt_size_field_is_refused_before_decoding(tmp_path, tags, tiff, says):
    """Sizes the fuzz found (tests/fuzz.py): a huge image, far more strips than the file holds (a
    minutes-long walk), an empty page, a huge tile: refused at once, naming the file."""
    path = _retagged(tmp_path / "c.tif", tags, **tiff)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile's own complaints (logging, not warnings, but be sure)
        with pytest.raises(DecodeError, match=rf"c\.tif: {says}"):
            read_path(path)


def test_a_decoder_out_of_memory_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, rgb16(), photometric="rgb")

    def no_memory(self, *args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_memory)
    with pytest.raises(DecodeError, match=r"m\.tif: cannot decode: out of memory while decoding it; the file may be "
                                          r"corrupt"):
        read_path(path)


@pytest.mark.parametrize("name", ["x.dng", "x.NEF"])
def test_corrupt_raw(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    [source] = list_frames([path])
    with pytest.raises(DecodeError, match=r"cannot (decode|unpack) RAW: LibRaw\w+Error .*re-copy it or remove it") as info:
        read_frame(source, 0)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not RAW_FILE.exists(), reason="shared RAW sample not present")
def test_real_raw():
    [source] = list_frames([RAW_FILE])
    mosaic = read_frame(source, 0)  # default: unpacked only, for the backend to develop
    assert mosaic.raw is not None and mosaic.info["develop"] == "backend" and mosaic.shape == (512, 768, 3)
    assert mosaic.data.dtype == np.uint16 and mosaic.data.shape == (512, 768)
    frame = read_frame(source, 0, raw_develop="libraw")
    assert frame.raw is None and frame.kind == "raw" and frame.transfer == "linear"
    assert frame.data.dtype == np.uint16 and frame.data.ndim == 3 and frame.data.shape[2] == 3
    assert frame.data.shape[:2] == (512, 768) and frame.data.flags.c_contiguous
    assert 0 < frame.data.mean() < 65535
    assert frame.info["white_level"] > 0 and frame.info["capture_time"].startswith("1997-04-23")
    exif = Image.Exif()
    exif.load(frame.exif)
    assert exif[271] == "Eastman Kodak Company"
    data, exif_block, info = read_raw(RAW_FILE)
    np.testing.assert_array_equal(data, frame.data)  # one fixed parameter set: the same pixels every time


# --------------------------------------------------------------------------- arrays


def test_arrays_no_copy_and_conversions():
    gray = RNG.integers(0, 256, (10, 12), dtype=np.uint8)
    rgb = RNG.integers(0, 65536, (10, 12, 3), dtype=np.uint16)
    f64 = RNG.random((10, 12, 3))
    swapped = rgb.astype(">u2")
    sources = sources_from_arrays([gray, rgb, f64, swapped])
    assert names(sources) == ["array[0]", "array[1]", "array[2]", "array[3]"]
    frames = [read_frame(s, i) for i, s in enumerate(sources)]
    assert frames[0].data.shape == (10, 12, 1) and np.shares_memory(frames[0].data, gray)
    assert frames[1].data is rgb or np.shares_memory(frames[1].data, rgb)
    assert frames[2].data.dtype == np.float32 and frames[2].transfer == "linear"
    np.testing.assert_array_equal(frames[2].data, f64.astype(np.float32))
    assert frames[3].data.dtype == np.dtype(np.uint16) and frames[3].data.dtype.isnative
    np.testing.assert_array_equal(frames[3].data, rgb)
    assert [f.kind for f in frames] == ["array"] * 4 and frames[1].transfer == "srgb"


def test_arrays_stack_and_alpha():
    stack = RNG.integers(0, 256, (3, 10, 12, 4), dtype=np.uint8)
    with pytest.warns(UserWarning, match="3 of 3 arrays have 4 channels"):
        sources = sources_from_arrays(stack)
    frame = read_frame(sources[1], 1)
    np.testing.assert_array_equal(frame.data, stack[1, :, :, :3])
    assert frame.data.flags.c_contiguous


@pytest.mark.parametrize(
    "arrays, message",
    [
        ([np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.int32)], r"array\[1\] has dtype int32; frames must be uint8"),
        ([np.zeros((4, 4, 2), np.uint8)], r"array\[0\] has shape \(4, 4, 2\)"),
        ([np.zeros(4, np.uint8)], r"array\[0\] has shape \(4,\)"),
        ([], "no arrays given"),
        (np.zeros((8, 8, 3), np.uint8), "got one array of shape"),
    ],
)
def test_array_errors(arrays, message):
    with pytest.raises(InputError, match=message):
        sources_from_arrays(arrays)


def test_read_is_read_only(tmp_path):
    path = save_jpeg(tmp_path / "a.jpg")
    before = path.read_bytes(), os.stat(path).st_mtime_ns
    read_path(path)
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before


def test_jpeg_round_trip_is_close(tmp_path):
    smooth = np.repeat(np.repeat(rgb8(6, 8), 4, axis=0), 4, axis=1)
    Image.fromarray(smooth).save(tmp_path / "s.jpg", quality=95, subsampling=0)
    frame = read_path(tmp_path / "s.jpg")
    assert frame.data.shape == smooth.shape and frame.kind == "jpeg"
    assert np.abs(frame.data.astype(int) - smooth).mean() < 6
