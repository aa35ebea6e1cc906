"""Listing frames in shot order and decoding them.

:func:`list_frames` turns files, folders and glob patterns into
:class:`FrameSource` items in shot order (cheap: no pixel is decoded);
:func:`sources_from_arrays` does the same for in-memory arrays;
:func:`read_frame` decodes one source into a :class:`Frame`, and is safe to
call from several threads at once.

Formats: JPEG and 8-bit PNG through Pillow, 16-bit PNG through imagecodecs
(Pillow reduces 16-bit RGB PNGs to 8 bits), TIFF through tifffile (a multi-page
TIFF is a z-stack: one frame per page), camera RAW through rawpy
(:mod:`gpustack.io.raw`). The format is told by the file's first bytes, not by
its extension (camera RAWs, many of them TIFF-based, by their extension).

EXIF orientation is never applied: the frames of one stack are shot on one
tripod with one orientation, the fused image keeps the frames' pixel layout
and carries their Orientation tag, so viewers turn it as they turn the frames.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import io
import logging
import math
import os
import re
import stat
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from PIL import Image, ImageFile

from ..errors import DecodeError, GpustackError, InputError
from ..options import ORDERS
from ._meta import capture_time, exif_bytes, exif_from_file, parse_exif_bytes
from .raw import CORRUPT_HINT, RawMosaic, read_raw, unpack_raw

logger = logging.getLogger(__name__)

#: Camera RAW file extensions (lower case), all read through rawpy/LibRaw.
RAW_EXTENSIONS = frozenset(
    ".dng .cr2 .cr3 .nef .nrw .arw .srf .sr2 .orf .rw2 .raf .pef .srw .kdc .dcr .mrw .3fr .erf .mef .mos .raw"
    " .rwl .iiq .x3f".split()
)
#: Vendor microscopy files (Nikon ND2, Zeiss CZI, Leica LIF), read through bioio (gpustack.io.vendor).
VENDOR_EXTENSIONS = frozenset({".nd2", ".czi", ".lif"})
#: Extensions of the files taken from a folder or a glob pattern.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff"}) | RAW_EXTENSIONS | VENDOR_EXTENSIONS

_IMAGE_KINDS = "(.jpg, .png, .tif, or camera RAW)"
_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_DIGITS = re.compile(r"(\d+)", re.ASCII)


@dataclass
class FrameSource:
    """One frame to read later.

    Attributes
    ----------
    path : Path or None
        The file; None for an in-memory array.
    page : int
        Page of a multi-page TIFF (z-stack); 0 otherwise.
    name : str
        Display name: the file name, ``"name.tif[3]"`` for page 3 of a
        multi-page TIFF, ``"array[5]"`` for arrays.
    array : ndarray or None
        The frame itself, for in-memory frames.
    reader : callable or None
        Microscopy files (:mod:`gpustack.io.ome`): ``reader()`` returns the focal plane's (H, W, C)
        samples and its ``info``; ``page`` is then the plane's z index.
    stack : gpustack.io.ome.StackInfo or None
        What a microscopy file says of the stack this plane belongs to (channels, calibration).
    """

    path: Path | None
    page: int = 0
    name: str = ""
    array: np.ndarray | None = None
    reader: object = field(default=None, repr=False)
    stack: object = field(default=None, repr=False)


@dataclass
class Frame:
    """One decoded frame.

    Attributes
    ----------
    index : int
        Position in the stack (0-based, after ordering).
    name : str
        Display name (see :class:`FrameSource`).
    path : Path or None
        The file, None for arrays.
    data : ndarray
        ``(H, W, C)`` with C in {1, 3}, dtype uint8, uint16 or float32,
        C-contiguous. Alpha channels are dropped; integer samples of fewer bits
        than their type (12-bit TIFF) are scaled to its full range. For a RAW
        frame left for the backend to develop (``raw`` set): the (H, W) uint16
        sensor mosaic.
    transfer : {"srgb", "linear"}
        ``"srgb"`` for integer images (display-referred), ``"linear"`` for RAW and float data.
    kind : {"jpeg", "png", "tiff", "raw", "array", "microscopy"}
        What it was decoded from ("microscopy": a focal plane of an OME-TIFF, ImageJ or vendor file).
    exif : bytes or None
        Sanitised EXIF block (``Exif\\0\\0`` + TIFF structure) to carry to the output.
    icc : bytes or None
        ICC profile.
    info : dict
        ``bits`` (sample depth of the source), ``read_s`` (decode seconds),
        ``capture_time`` (ISO 8601) when known, and RAW details for RAW files
        (``develop``: ``"backend"`` or why LibRaw developed it).
    raw : RawMosaic or None
        The undeveloped Bayer mosaic and its parameters (``data`` is its mosaic).
    """

    index: int
    name: str
    path: Path | None
    data: np.ndarray
    transfer: str
    kind: str
    exif: bytes | None = None
    icc: bytes | None = None
    info: dict = field(default_factory=dict)
    raw: RawMosaic | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the frame as it enters the fusion (C = 3 for a mosaic to develop)."""
        return (*self.data.shape, 3) if self.raw is not None else tuple(self.data.shape)


# --------------------------------------------------------------------------- listing


def list_frames(inputs: Iterable[str | os.PathLike] | str | os.PathLike, order: str = "name", *,
                time: int | None = None, position: int | None = None) -> list[FrameSource]:
    """List the frames of a stack in shot order.

    Parameters
    ----------
    inputs : sequence of str or Path
        Image files, folders (their image files, not recursive; other files
        and hidden files are skipped) and glob patterns (``"shots/*.NEF"``).
        A multi-page TIFF gives one frame per page; an OME-TIFF or ImageJ hyperstack one frame per
        focal plane, holding every channel (:mod:`gpustack.io.ome`).
    order : {"name", "exif", "reverse", "z"}
        ``name``: natural sort of the file names (frame2 before frame10,
        case-insensitive, ties by the full path, then the page). ``reverse``:
        the same, reversed. ``exif``: EXIF capture time (DateTimeOriginal +
        SubSecTimeOriginal), names break ties; frames without one follow in
        name order, with one warning. ``z``: the z position in each microscopy file's metadata.
    time, position : int, optional
        Microscopy files: the time point and the stage position to take (default: each one is
        a stack of its own, told apart by ``FrameSource.stack``).

    Returns
    -------
    list of FrameSource

    Raises
    ------
    InputError
        No inputs, a path that does not exist (or a symbolic link to nothing), a
        folder without image files, a pattern matching none, the same file given
        twice, a multi-page TIFF with pages of different sizes.
    DecodeError
        A folder that cannot be listed, a file that cannot be read, a file that
        is not an image (by its first bytes) or a TIFF whose structure cannot be
        read.

    Warns
    -----
    UserWarning
        For each symbolic link in a folder (or among a pattern's matches) whose
        target is missing or loops: it is skipped.
    """
    if order not in ORDERS:
        raise InputError(f"order must be one of {', '.join(ORDERS)}; got {order!r}")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths = [path for item in inputs for path in _expand(item)]
    if not paths:
        raise InputError("no frames given; pass image files, a folder that holds them, or a glob pattern")
    _reject_repeats(paths)

    kinds = {path: _sniff(path) for path in paths}
    sources = []
    for path in paths:
        if kinds[path] == "tiff":
            sources.extend(_tiff_sources(path, time, position))
        elif kinds[path] == "vendor":
            from .vendor import vendor_sources

            sources.extend(vendor_sources(path, time=time, position=position))
        else:
            sources.append(FrameSource(path, 0, path.name))
    sources.sort(key=_name_key)
    if order == "z":
        from .ome import z_order

        sources = z_order(sources)
    elif order == "reverse":
        sources.reverse()
    elif order == "exif":
        times = {path: capture_time(exif_from_file(path, kind)) for path, kind in kinds.items()}
        dated = [s for s in sources if times[s.path]]
        undated = [s for s in sources if not times[s.path]]
        dated.sort(key=lambda s: _time_key(times[s.path]))  # stable: name order breaks ties
        if undated:
            where = "they stay in name order" if not dated else "they follow the others, in name order"
            warnings.warn(
                f"{len(undated)} of {len(sources)} frames have no EXIF capture time (DateTimeOriginal); {where}",
                stacklevel=2,
            )
        sources = dated + undated
    logger.debug("listed %d frames from %d files, order %s", len(sources), len(paths), order)
    return sources


def file_stats(paths: Iterable[Path | str | None]) -> list[dict]:
    """``path``, ``size`` (bytes) and ``mtime_ns`` of each distinct file among ``paths`` (None entries,
    in-memory frames, skipped), in the order first given: what a sidecar records of a run's inputs."""
    out, seen = [], set()
    for path in paths:
        if path is None or str(path) in seen:
            continue
        seen.add(str(path))
        try:
            st = os.stat(path)
        except OSError:
            out.append({"path": str(path), "size": None, "mtime_ns": None})
        else:
            out.append({"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def _expand(item) -> list[Path]:
    """The frame files one input names."""
    text = os.fspath(item)
    path = Path(text)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as exc:  # a parent folder we may not enter, a symbolic link that loops, an I/O error
        raise DecodeError(path, f"cannot read: {exc.strerror or exc}; check the path and its permissions") from exc
    if mode is not None and stat.S_ISDIR(mode):
        try:
            entries = list(path.iterdir())
        except OSError as exc:
            raise DecodeError(path, f"cannot list the folder: {exc.strerror or exc}; check that you may read it "
                                    "(its r permission) or pass the frame files") from exc
        files = _frame_files(entries)
        if not files:
            raise InputError(
                f"folder {path} holds no image files {_IMAGE_KINDS}; pass the frame files or the folder that holds them"
            )
        return files
    if mode is not None and stat.S_ISREG(mode):
        return [path]
    if mode is not None:
        raise InputError(f"{path} is neither a file nor a folder; pass image files or the folder that holds them")
    broken = _broken_link(path)
    if broken:
        raise InputError(f"{path} is {broken}; check the path")
    if any(c in text for c in "*?["):
        matches = [Path(m) for m in glob.glob(text, recursive=True)]
        if not matches:
            raise InputError(f"pattern {text} matches nothing; check the pattern")
        files = _frame_files(matches)
        if not files:
            raise InputError(f"pattern {text} matches no image files {_IMAGE_KINDS}; check the pattern")
        return sorted(files, key=lambda p: _natural_key(str(p)))
    raise InputError(f"no such file or folder: {text}; check the path")


def _frame_files(candidates: Iterable[Path]) -> list[Path]:
    """The image files among a folder's entries or a pattern's matches; a symbolic link with an
    image name whose target is missing or loops is skipped with a warning naming it."""
    files = []
    for p in candidates:
        if not _is_image_name(p):
            continue
        broken = _broken_link(p)
        if broken:
            warnings.warn(f"{p} is {broken}; skipped", stacklevel=3)
        elif p.is_file():
            files.append(p)
    return files


def _broken_link(path: Path) -> str | None:
    """What is wrong with ``path`` if it is a symbolic link that cannot be followed; else None."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link that loops (it leads back to itself)"
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"a symbolic link to {target}, which does not exist"
    return None


def _is_image_name(path: Path) -> bool:
    # Hidden files are skipped: macOS "._IMG_0001.JPG" resource forks carry image extensions.
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _reject_repeats(paths: list[Path]) -> None:
    seen: dict[object, Path] = {}
    for path in paths:
        try:
            st = path.stat()
            key = (st.st_dev, st.st_ino) if st.st_ino else os.path.normcase(path.resolve())
        except OSError:
            key = os.path.normcase(path.absolute())
        if key in seen:
            first = seen[key]
            also = "" if first == path else f" (as {first} and as {path})"
            raise InputError(f"frame file {path} is given twice{also}; list each frame once")
        seen[key] = path


def _natural_key(text: str) -> tuple:
    parts = _DIGITS.split(text.casefold())
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts))


def _time_key(stamp: str) -> tuple[str, float]:
    """Sort key of an ISO capture time: sub-seconds compare as numbers (".5" == ".50")."""
    whole, _, fraction = stamp.partition(".")
    return whole, float("0." + fraction) if fraction else 0.0


def _name_key(source: FrameSource) -> tuple:
    stack = source.stack  # a microscopy file's planes stay grouped by position and time point
    within = (source.page,) if stack is None else (stack.series, stack.time or 0, source.page)
    return (_natural_key(source.path.name), _natural_key(str(source.path)), str(source.path), *within)


def _sniff(path: Path) -> str:
    """``"jpeg"``, ``"png"``, ``"tiff"``, ``"raw"`` or ``"vendor"`` (microscopy, by extension);
    DecodeError for anything else, or a file that cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise DecodeError(path, f"cannot read: {exc.strerror or exc}; check that the file is readable") from exc
    if path.suffix.lower() in RAW_EXTENSIONS:
        return "raw"
    if path.suffix.lower() in VENDOR_EXTENSIONS:
        return "vendor"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    raise DecodeError(path, f"not an image file (found {_describe(head)}); remove it from the frames")


def _describe(head: bytes) -> str:
    """What the first bytes of a non-image file look like, for the error message."""
    if not head:
        return "an empty file"
    known = {b"GIF8": "a GIF image", b"BM": "a BMP image", b"%PDF": "a PDF document", b"PK\x03\x04": "a ZIP archive"}
    for magic, what in known.items():
        if head.startswith(magic):
            return what
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image"
    if head[4:8] == b"ftyp":
        return "an ISO media file (HEIC, AVIF or video)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"text {' '.join(text.split())[:12]!r}"
    return "binary data " + head[:8].hex(" ")


def _tiff_sources(path: Path, time=None, position=None) -> list[FrameSource]:
    """One source per full-size page (reduced-resolution pages, i.e. thumbnails, are skipped); for
    an OME-TIFF or ImageJ hyperstack, one per focal plane (:mod:`gpustack.io.ome`)."""
    from . import ome

    with _decoding(path):
        with ome.broken_chain_refused(path), tifffile.TiffFile(path) as tf:
            _require_pages(path, tf)
            if ome.is_microscopy(tf):
                return ome.microscopy_sources(path, tf, time=time, position=position)
            if len(tf.pages) == 1:
                return [FrameSource(path, 0, path.name)]
            full = [(i, _page_shape(path, page)) for i, page in enumerate(tf.pages) if not page.is_reduced]
    shapes = sorted({shape for _, shape in full})
    if len(shapes) > 1:
        raise InputError(
            f"{path} holds {len(full)} pages of {len(shapes)} different shapes ({', '.join(map(str, shapes[:3]))}); "
            "a multi-page TIFF is read as a z-stack, so all its pages must have the same size"
        )
    if len(full) == 1:
        return [FrameSource(path, full[0][0], path.name)]
    return [FrameSource(path, i, f"{path.name}[{i}]") for i, _ in full]


# --------------------------------------------------------------------------- arrays

_ARRAY_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32), np.dtype(np.float64))


def sources_from_arrays(arrays: Sequence[np.ndarray] | np.ndarray) -> list[FrameSource]:
    """Wrap in-memory frames as sources, in the order given.

    Parameters
    ----------
    arrays : sequence of ndarray, or one ndarray of shape (N, H, W) or (N, H, W, C)
        Each frame 2-D ``(H, W)`` or 3-D ``(H, W, C)`` with C in {1, 3, 4}
        (the 4th channel, alpha, is dropped with one warning); dtype uint8,
        uint16, float32 or float64 (read as float32). Arrays are not copied
        unless they must be converted.

    Returns
    -------
    list of FrameSource

    Raises
    ------
    InputError
        No arrays, or an array of another shape or dtype.
    """
    if isinstance(arrays, np.ndarray):
        if arrays.ndim == 4 or (arrays.ndim == 3 and arrays.shape[-1] not in (3, 4)):
            arrays = list(arrays)
        else:
            raise InputError(
                f"got one array of shape {arrays.shape}; pass a sequence of frames: a list of (H, W) or (H, W, C) "
                "arrays, or one (N, H, W) or (N, H, W, C) array"
            )
    arrays = list(arrays)
    if not arrays:
        raise InputError("no arrays given; pass a sequence of (H, W) or (H, W, C) arrays")
    sources, with_alpha = [], 0
    for i, array in enumerate(arrays):
        if not isinstance(array, np.ndarray):
            array = np.asarray(array)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise InputError(
                f"array[{i}] has shape {array.shape}; frames must be (H, W) or (H, W, C) with C = 1, 3 or 4"
            )
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise InputError(f"array[{i}] has shape {array.shape}; a frame must hold at least one pixel")
        if array.dtype.newbyteorder("=") not in _ARRAY_DTYPES:
            raise InputError(
                f"array[{i}] has dtype {array.dtype}; frames must be uint8, uint16, float32 or float64 "
                "(float64 is read as float32)"
            )
        with_alpha += array.ndim == 3 and array.shape[2] == 4
        sources.append(FrameSource(path=None, page=0, name=f"array[{i}]", array=array))
    if with_alpha:
        warnings.warn(
            f"{with_alpha} of {len(arrays)} arrays have 4 channels; the 4th (alpha) is dropped", stacklevel=2
        )
    return sources


# --------------------------------------------------------------------------- decoding


_DECODE_LOG_FD: int | None = None


def set_decode_log(fd: int | None) -> None:
    """Report every file decode to ``fd`` (a pipe to ``gpustack stack``'s supervising process): a
    JSON line ``["start", path]`` before, ``["end", path]`` after, so that a decoder that crashes the
    process can be named. None stops."""
    global _DECODE_LOG_FD
    _DECODE_LOG_FD = fd


def _log_decode(event: str, path) -> None:
    if _DECODE_LOG_FD is not None:
        import json

        try:
            os.write(_DECODE_LOG_FD, (json.dumps([event, str(path)]) + "\n").encode())
        except OSError:
            pass


def read_frame(source: FrameSource, index: int, raw_develop: str = "backend", *, alloc=None) -> Frame:
    """Decode one frame.

    Parameters
    ----------
    source : FrameSource
        From :func:`list_frames` or :func:`sources_from_arrays`.
    index : int
        Its position in the stack.
    raw_develop : {"backend", "libraw"}
        Camera RAW files: ``"backend"`` only unpacks a 2x2 Bayer mosaic (``Frame.raw``; the
        backend's ``develop`` kernels develop it) and has LibRaw develop anything else
        (X-Trans, Foveon, monochrome, linear DNG); ``"libraw"`` has LibRaw develop every file.
    alloc : callable, optional
        ``alloc(shape, dtype)`` gives a writable C-contiguous array to decode into where the
        decoder can write the frame's final layout itself (RAW mosaics; TIFF pages already in
        (H, W[, 3]) uint8/uint16/float32 at full bit depth): a backend's ``host_buffer``, the
        memory it uploads from without another copy. Other frames are decoded as usual.

    Returns
    -------
    Frame

    Raises
    ------
    DecodeError
        The file cannot be read (permissions, I/O error) or decoded (truncated,
        corrupt, unsupported sample type or colour model); the message names the
        file and what to do.
    """
    start = time.perf_counter()
    exif = icc = mosaic = None
    if source.array is not None:
        data = _to_hwc(source.array)
        kind, info = "array", {"bits": data.dtype.itemsize * 8}
    elif source.reader is not None:  # a focal plane of a microscopy file (or z-stack array), every channel
        where = Path(source.path or source.name)
        _log_decode("start", where)
        try:
            with _decoding(where):
                data, info = source.reader()
        finally:
            _log_decode("end", where)
        _require_pixels(where, data)
        kind = "microscopy"
    else:
        path = Path(source.path)
        _log_decode("start", path)
        try:
            data, exif, icc, info, kind, mosaic = _decode_file(path, source.page, raw_develop, alloc)
        finally:
            _log_decode("end", path)
    info["read_s"] = time.perf_counter() - start
    transfer = "linear" if kind in ("raw", "microscopy") or data.dtype == np.float32 else "srgb"
    name = source.name or (Path(source.path).name if source.path is not None else f"array[{index}]")
    logger.debug("read frame %d (%s): %s %s in %.3f s", index, name, data.shape, data.dtype, info["read_s"])
    return Frame(index, name, source.path, data, transfer, kind, exif=exif, icc=icc, info=info, raw=mosaic)


def _decode_file(path: Path, page: int, raw_develop: str, alloc=None):
    """(data, exif, icc, info, kind, mosaic) of one file (see ``read_frame``)."""
    exif = icc = mosaic = None
    kind = _sniff(path)
    if kind == "raw" and raw_develop == "backend":
        mosaic = unpack_raw(path, alloc)
        if mosaic.is_bayer:
            data, exif, info = mosaic.mosaic, mosaic.exif, mosaic.info
            info["develop"] = "backend"
            info["bits"] = 16
        else:
            data, exif, info = read_raw(path)
            info["develop"] = (f"LibRaw (not a 2x2 Bayer mosaic: {mosaic.info['raw_type']} sensor, "
                               f"{mosaic.info['num_colors']} colours, CFA {mosaic.info['color_desc']})")
            mosaic = None
    elif kind == "raw":
        data, exif, info = read_raw(path)
        info["develop"] = "LibRaw (raw_develop='libraw')"
    elif kind == "tiff":
        data, icc, parsed, info = _read_tiff(path, kind, page, alloc)
    else:
        data, icc, parsed, info = _read_pillow(path, kind, page)
    if kind != "raw":
        exif = exif_bytes(parsed)
        when = capture_time(parsed)
        if when:
            info["capture_time"] = when
    return data, exif, icc, info, kind, mosaic


@contextlib.contextmanager
def _decoding(path: Path):
    """Turn any decoder failure into one DecodeError naming the file (our own errors pass through).
    A decoder out of memory is one too: a size field that a corruption made huge is the usual
    cause (the sizes checked up front are the image's, not each strip's or tile's)."""
    try:
        yield
    except GpustackError:
        raise
    except MemoryError as exc:
        raise DecodeError(path, "cannot decode: out of memory while decoding it; the file may be corrupt (a "
                                "wrong size field) — re-copy it or remove it from the frames; if it is sound, "
                                "lower --workers") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow, tifffile and imagecodecs raise many types
        lines = str(exc).strip().splitlines()
        reason = type(exc).__name__ + (f": {lines[0][:120]}" if lines else "")
        raise DecodeError(path, f"cannot decode: {reason}; {CORRUPT_HINT}") from exc


def _to_hwc(array: np.ndarray) -> np.ndarray:
    """(H, W, C) with C in {1, 3}, native uint8/uint16/float32, C-contiguous; copies only when needed."""
    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2]
    if channels == 2:  # grey + alpha
        array = array[:, :, :1]
    elif channels == 4:  # RGBA
        array = array[:, :, :3]
    dtype = array.dtype.newbyteorder("=")
    if dtype.kind == "f" and dtype != np.float32:
        dtype = np.dtype(np.float32)
    if array.dtype != dtype:
        with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, refused by the frame checks
            array = array.astype(dtype)
    return np.ascontiguousarray(array)


def _read_pillow(path: Path, kind: str, page: int):
    """JPEG and PNG: (data, icc, exif, info)."""
    with _decoding(path):
        with open(path, "rb") as f:
            raw_bytes = f.read()
        png_bits = raw_bytes[24] if kind == "png" and len(raw_bytes) > 25 else 8
        with Image.open(io.BytesIO(raw_bytes)) as im:
            _check_declared_size(path, (im.height, im.width, len(im.getbands())), 2 if png_bits == 16 else 1)
            icc = im.info.get("icc_profile") or None
            if png_bits == 16:
                # Pillow reduces 16-bit RGB(A) PNGs to 8 bits: decode the samples with imagecodecs.
                array = imagecodecs.png_decode(raw_bytes)
            else:
                im.load()  # raises OSError on truncated data (unless LOAD_TRUNCATED_IMAGES is set)
                _reject_truncated(path, kind, raw_bytes)
                array = _pillow_array(im, path)
            exif = parse_exif_bytes(im.info.get("exif"))  # getexif() would decode a 16-bit PNG again
    _require_pixels(path, array)
    return _to_hwc(array), icc, exif, {"bits": int(png_bits)}


def _require_pixels(path: Path, array: np.ndarray) -> None:
    """A decoded image must be a non-empty (H, W) or (H, W, C) array (a corrupt size field can make
    a decoder return an empty or flat one)."""
    if array.ndim not in (2, 3) or array.size == 0:
        raise DecodeError(path, f"cannot decode: the image decoded to an array of shape {array.shape}; "
                                f"{CORRUPT_HINT}")


def _memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_declared_size(path: Path, shape, itemsize: int) -> None:
    """Refuse, before decoding, an image whose header declares more samples than half this
    machine's memory holds: a corrupt size field would otherwise have the decoder allocate (and
    fill) it all. No frame that size could be stacked here anyway."""
    need = int(np.prod(shape, dtype=np.float64) * itemsize)
    memory = _memory_bytes()
    if memory is not None and need > memory // 2:
        h, w = shape[:2]
        raise DecodeError(path, f"declares a {w}x{h} image ({need / 1e9:.1f} GB decoded), more than half this "
                                f"machine's memory ({memory / 1e9:.1f} GB); {CORRUPT_HINT}")


def _reject_truncated(path: Path, kind: str, raw_bytes: bytes) -> None:
    """Pillow pads truncated images silently when someone set ``ImageFile.LOAD_TRUNCATED_IMAGES``;
    in that case check that the file ends as a complete JPEG/PNG does."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        return
    tail = raw_bytes[-4096:]
    complete = b"IEND" in tail if kind == "png" else tail.rstrip(b"\0\r\n ").endswith(b"\xff\xd9")
    if not complete:
        raise DecodeError(path, f"cannot decode: image file is truncated; {CORRUPT_HINT}")


def _pillow_array(im: Image.Image, path: Path) -> np.ndarray:
    mode = im.mode
    if mode in ("L", "RGB", "I;16", "I;16B", "I;16L"):
        return np.asarray(im)
    if mode in ("1", "LA", "La"):
        return np.asarray(im.convert("L"))
    if mode in ("RGBA", "RGBa", "RGBX", "YCbCr"):
        return np.asarray(im.convert("RGB"))
    if mode in ("P", "PA"):
        # via RGBA: Pillow warns when a palette with transparency goes straight to RGB
        return np.asarray(im.convert("RGBA"))[:, :, :3]
    raise DecodeError(
        path, f"pixel mode {mode} is not supported; gpustack reads grayscale and RGB frames — convert the frames to RGB"
    )


_TIFF_PHOTOMETRIC = (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB)


def _read_tiff(path: Path, kind: str, page_index: int, alloc=None):
    """TIFF page: (data, icc, exif, info); decoded into ``alloc(shape, dtype)`` where the page is
    already the frame's layout (see ``read_frame``)."""
    with _decoding(path):
        with tifffile.TiffFile(path) as tf:
            _require_pages(path, tf)
            if page_index >= len(tf.pages):
                raise DecodeError(
                    path, f"has {len(tf.pages)} pages, page {page_index} was asked for; the file changed since it "
                    "was listed — list the frames again"
                )
            page = tf.pages[page_index]
            _check_tiff_page(path, page)
            _check_declared_size(path, (page.imagelength, page.imagewidth, page.imagedepth * page.samplesperpixel),
                                 page.dtype.itemsize)
            if page.is_tiled:  # each tile is decoded whole, however little of it the image uses
                _check_declared_size(path, (page.tilelength, page.tilewidth, page.tiledepth * page.samplesperpixel),
                                     page.dtype.itemsize)
            segments = math.prod(page.chunked)
            if len(page.dataoffsets) < segments:  # tifffile would allocate and walk them all: minutes
                raise DecodeError(path, f"cannot decode: its size ({page.imagewidth}x{page.imagelength}) needs "
                                        f"{segments} strips or tiles but it holds {len(page.dataoffsets)}; "
                                        f"{CORRUPT_HINT}")
            bits = int(page.bitspersample)
            array = _decode_buffer(page, bits, alloc)
            if array is None:
                array = page.asarray()
            else:
                page.asarray(out=array.reshape(page.shape))
            tag = page.tags.get(34675)  # InterColorProfile
            icc = bytes(tag.value) if tag is not None else None
            if page.axes.startswith("S") and array.ndim == 3:  # planar (C, H, W)
                array = np.moveaxis(array, 0, -1)
    _require_pixels(path, array)
    if array.ndim == 3 and array.shape[2] > 4:
        raise DecodeError(
            path, f"has {array.shape[2]} samples per pixel; gpustack reads grayscale and RGB frames — convert to RGB"
        )
    array = _to_hwc(array)
    if array.dtype.kind == "u" and bits < array.dtype.itemsize * 8:
        array = _full_range(array, bits)
    return array, icc or None, exif_from_file(path, "tiff"), {"bits": bits}


_DIRECT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def _decode_buffer(page, bits: int, alloc):
    """``alloc((H, W, C), dtype)`` for a page whose decoded samples are already a frame as gpustack
    keeps it (chunky (H, W) or (H, W, 3), native uint8/uint16/float32, every bit used), else None."""
    if alloc is None or page.dtype not in _DIRECT_DTYPES or page.dtype.byteorder not in "=|":
        return None
    shape = page.shape
    if len(shape) == 2:
        frame_shape = (*shape, 1)
    elif len(shape) == 3 and shape[2] == 3 and not page.axes.startswith("S"):
        frame_shape = shape
    else:
        return None
    if page.dtype.kind == "u" and bits != page.dtype.itemsize * 8:
        return None
    return alloc(frame_shape, page.dtype)


def _require_pages(path: Path, tf: tifffile.TiffFile) -> None:
    if not len(tf.pages):  # tifffile logs a broken first-IFD offset and lists no page
        raise DecodeError(path, f"cannot decode: no readable image in the TIFF structure; {CORRUPT_HINT}")


def _page_shape(path: Path, page) -> tuple[int, ...]:
    """The page's shape; DecodeError when a corrupt tag makes it something else than a few sizes."""
    shape = page.shape
    if not (isinstance(shape, tuple) and 1 <= len(shape) <= 6 and all(isinstance(d, int) for d in shape)):
        raise DecodeError(path, f"cannot decode: a page's size tags are unreadable; {CORRUPT_HINT}")
    return shape


def _check_tiff_page(path: Path, page) -> None:
    _page_shape(path, page)
    dtype = page.dtype
    if dtype is None or not (dtype.kind == "f" or dtype in (np.dtype(np.uint8), np.dtype(np.uint16))):
        raise DecodeError(
            path,
            f"holds {dtype} samples ({page.bitspersample} bits); gpustack reads uint8, uint16 and float TIFFs — "
            "convert the frames to 8 or 16 bits",
        )
    photometric = page.photometric
    jpeg_ycbcr = photometric == tifffile.PHOTOMETRIC.YCBCR and page.compression == tifffile.COMPRESSION.JPEG
    if photometric not in _TIFF_PHOTOMETRIC and not jpeg_ycbcr:
        name = getattr(photometric, "name", photometric)
        raise DecodeError(
            path, f"uses photometric {name}; gpustack reads grayscale and RGB TIFFs — convert the frames to RGB"
        )
    if len(page.axes) - page.axes.count("S") != 2:
        raise DecodeError(path, f"has page layout {page.axes} {page.shape}; gpustack reads 2-D grayscale or RGB pages")


def _full_range(array: np.ndarray, bits: int) -> np.ndarray:
    """Scale samples of ``bits`` bits (a 12-bit TIFF in uint16) to the full range of their dtype."""
    top = (1 << bits) - 1
    full = np.iinfo(array.dtype).max
    wide = np.minimum(array, top).astype(np.uint32)
    return ((wide * full + top // 2) // top).astype(array.dtype)
