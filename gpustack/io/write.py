"""Writing the fused image, the depth map and the JSON sidecar.

Every write is atomic: the file is written to a hidden temporary file in the
destination folder (``.fused.tif.<random>.tmp``), flushed and fsync'ed, then
moved into place; on any failure the temporary file is deleted, so a crash or
a full disk never leaves a partial output. A run's outputs are published
together (:class:`StagedOutputs`): every one is written to its temporary first,
then all are moved into place, or none (a failed move undoes the others).
Without ``overwrite`` the move is a hard link, which fails if the destination
appeared meanwhile (no clobbering, no race). On file systems without hard
links (FAT, some network shares) it falls back to "check that the destination
is absent, then rename": a file created by another process between the check
and the rename is replaced.

What each format carries (``exif`` is a frame's sanitised EXIF block, see
:mod:`gpustack.io._meta`):

- **TIFF** (tifffile): the ICC profile; from the EXIF only the IFD0 tags Make,
  Model, Artist, Copyright, Orientation and DateTime (set to the source's
  DateTimeOriginal) — tifffile cannot write an Exif sub-IFD, so exposure data
  and GPS are not carried; Software is ``gpustack``; ``metadata`` goes to
  ImageDescription as JSON.
- **PNG** (imagecodecs, 8 and 16 bits): ICC profile (iCCP chunk), the whole
  EXIF block (eXIf chunk), ``metadata`` as one iTXt chunk per key.
- **JPEG** (Pillow, quality 95, 4:4:4): ICC profile, the whole EXIF block (if
  under the 64 KiB a JPEG segment holds), ``metadata`` as a JSON comment.
"""

from __future__ import annotations

import dataclasses
import enum
import glob
import json
import logging
import math
import os
import secrets
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import BinaryIO

import imagecodecs
import numpy as np
import tifffile
from PIL import Image

from ..errors import GpustackError, InputError, OutputError
from ..options import sidecar_path  # noqa: F401 - here too: gpustack.io's outputs
from ._meta import parse_exif_bytes, tiff_extratags

logger = logging.getLogger(__name__)

#: TIFF compression: Adobe Deflate (zlib) level 1 with the horizontal predictor,
#: read by every TIFF reader. Measured on a 12 MP 16-bit RGB photo (72 MB raw):
#: 57 MB in 0.6 s on 2 cores (4 strip workers); zlib level 6 saves 2 % more in
#: 2.5x the time, LZW compresses less and decodes slower, none writes 72 MB.
#: On float32 depth maps tifffile applies the floating-point predictor (3):
#: 15 MB instead of 48 MB for a smooth 12 MP map.
TIFF_COMPRESSION = {"compression": "zlib", "compressionargs": {"level": 1}, "predictor": True}
#: zlib level of PNG output: 12 MP 16-bit in about 1.5 s; level 6 is 10 % smaller and twice as slow.
PNG_LEVEL = 3
#: JPEG quality; chroma is not subsampled (4:4:4) to keep fine detail sharp.
JPEG_QUALITY = 95
#: Largest EXIF block a JPEG APP1 segment holds.
_JPEG_EXIF_MAX = 65533
_FORMATS = ("tiff", "png", "jpeg")


# --------------------------------------------------------------------------- pre-flight


def check_outputs(paths: list[Path | str | None], inputs: list[Path | str | None], overwrite: bool) -> None:
    """Check before any work that every output can be written.

    Parameters
    ----------
    paths : list of Path or None
        Every file the run will write (image, depth map, :func:`sidecar_path`
        of the image); None entries are skipped.
    inputs : list of Path
        The frame files (None entries, in-memory frames, are skipped).
    overwrite : bool
        Existing outputs may be replaced.

    Raises
    ------
    InputError
        An output is also an input frame, or two outputs are the same file.
    OutputError
        An output's folder is missing or not writable, an output is a folder,
        or it exists and ``overwrite`` is False.
    """
    input_keys, input_ids = {}, {}
    for inp in inputs:
        if inp is not None:
            input_keys[_path_key(inp)] = inp
            file_id = _file_id(inp)
            if file_id is not None:
                input_ids[file_id] = inp
    outputs: dict[str, Path] = {}
    for out in (Path(p) for p in paths if p is not None):
        key = _path_key(out)
        file_id = _file_id(out)
        if key in input_keys or (file_id is not None and file_id in input_ids):
            raise InputError(f"output {out} is also an input frame; choose another output path")
        if key in outputs:
            raise InputError(f"output {out} is given twice (also as {outputs[key]}); give each output its own path")
        outputs[key] = out
        _check_output(out, overwrite)


def _path_key(path) -> str:
    return os.path.normcase(str(Path(path).resolve()))


def _file_id(path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st.st_ino else None


def _check_output(out: Path, overwrite: bool) -> None:
    folder = out.parent
    if not folder.exists():
        raise OutputError(f"cannot write {out}: folder {folder} does not exist; create it or choose another path")
    if not folder.is_dir():
        raise OutputError(f"cannot write {out}: {folder} is not a folder; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write {out}: folder {folder} is not writable; check its permissions or choose another folder"
        )
    if out.is_dir():
        raise OutputError(f"output {out} is a folder; give a file name such as {out / 'fused.tif'}")
    if out.exists() and not overwrite:
        raise OutputError(f"output {out} exists; pass --overwrite (overwrite=True) to replace it")


# --------------------------------------------------------------------------- writers


def write_image(
    path: Path | str,
    image: np.ndarray,
    *,
    fmt: str,
    exif: bytes | None = None,
    icc: bytes | None = None,
    overwrite: bool = False,
    metadata: dict | None = None,
    stage: StagedOutputs | None = None,
) -> None:
    """Write an image atomically as TIFF, PNG or JPEG.

    Parameters
    ----------
    path : Path or str
        Destination.
    image : ndarray, (H, W, C) with C in {1, 3} (or (H, W)), uint8 or uint16
        JPEG takes uint8 only. TIFF also takes 2 and 4 to 8 channels (microscopy): a grayscale
        page per channel.
    fmt : {"tiff", "png", "jpeg"}
        Format (``StackOptions.output_format``).
    exif : bytes, optional
        EXIF block (``Exif\\0\\0`` + TIFF structure) to carry; see the module
        docstring for what each format keeps.
    icc : bytes, optional
        ICC profile to embed.
    overwrite : bool
        Replace an existing file.
    metadata : dict, optional
        Text entries (values that are not str are written as JSON): TIFF
        ImageDescription (JSON of the dict), PNG iTXt chunks, JPEG comment (JSON).
    stage : StagedOutputs, optional
        Leave the file staged, to be published with the other outputs of the
        run when ``stage`` commits (a failed write discards the whole stage).

    Raises
    ------
    InputError
        Unknown format, wrong shape or dtype, uint16 for JPEG.
    OutputError
        The file exists and ``overwrite`` is False, or it cannot be written.
    """
    path = Path(path)
    image = np.asarray(image)
    if fmt not in _FORMATS:
        raise InputError(f"output {path}: unknown format {fmt!r}; use one of {', '.join(_FORMATS)}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in ((1, 3) if fmt != "tiff" else range(1, 9)):
        expected = "(H, W, C) with 1 to 8 channels" if fmt == "tiff" else "(H, W, 1) or (H, W, 3)"
        raise InputError(f"output {path}: image has shape {image.shape}; expected {expected}")
    if image.dtype not in (np.uint8, np.uint16):
        raise InputError(f"output {path}: image has dtype {image.dtype}; expected uint8 or uint16")
    if fmt == "jpeg" and image.dtype != np.uint8:
        raise InputError(f"output {path}: JPEG holds 8 bits per sample, got {image.dtype}; write uint8 or a .tif/.png")
    image = np.ascontiguousarray(image)
    encode = {"tiff": _encode_tiff, "png": _encode_png, "jpeg": _encode_jpeg}[fmt]
    _atomic_write(path, lambda f: encode(f, image, exif, icc, metadata), overwrite=overwrite, stage=stage)
    logger.debug("wrote %s (%s, %s %s)", path, fmt, image.shape, image.dtype)


def write_depth(
    path: Path | str, depth: np.ndarray, *, overwrite: bool = False, description: str | None = None,
    stage: StagedOutputs | None = None,
) -> None:
    """Write a depth map atomically as a float32 TIFF (zlib, floating-point predictor).

    Parameters
    ----------
    path : Path or str
        Destination (.tif/.tiff).
    depth : ndarray, (H, W) or (C, H, W), float
        Frame index or microns per pixel (a page per plane for C planes); written as float32.
    overwrite : bool
        Replace an existing file.
    description : str, optional
        ImageDescription text (e.g. the unit).
    stage : StagedOutputs, optional
        Publish with the other outputs of the run (see :func:`write_image`).

    Raises
    ------
    InputError
        Not a 2-D float array.
    OutputError
        The file exists and ``overwrite`` is False, or it cannot be written.
    """
    path = Path(path)
    depth = np.asarray(depth)
    if depth.ndim not in (2, 3) or depth.dtype.kind != "f":
        raise InputError(f"depth map {path}: got {depth.dtype} {depth.shape}; expected a float array (H, W) or "
                         f"(C, H, W)")
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    _atomic_write(path, lambda f: _tiff(f, depth, "minisblack", description=description), overwrite=overwrite,
                  stage=stage)
    logger.debug("wrote depth map %s %s", path, depth.shape)


def write_sidecar(path: Path | str, data: dict, *, overwrite: bool = False,
                  stage: StagedOutputs | None = None) -> None:
    """Write a JSON sidecar atomically (indent 2, UTF-8); with ``stage``, published with the other
    outputs of the run (see :func:`write_image`).

    NumPy scalars and arrays, paths, dates, enums and dataclasses are
    converted; NaN and infinities become null; bytes are summarised by length;
    anything else is written as its ``str``.

    Raises
    ------
    OutputError
        The file exists and ``overwrite`` is False, or it cannot be written.
    """
    text = json.dumps(_jsonable(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    _atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")), overwrite=overwrite, stage=stage)


# --------------------------------------------------------------------------- encoders


def _tiff(f: BinaryIO, data: np.ndarray, photometric: str, *, icc=None, description=None, extratags=()) -> None:
    planes = data.ndim == 3 and photometric != "rgb"  # (C, H, W): a page per plane
    rowbytes = max(1, data.shape[-1] * data.itemsize if planes else data.nbytes // data.shape[0])
    tifffile.imwrite(
        f,
        data,
        photometric=photometric,
        rowsperstrip=max(1, (256 << 10) // rowbytes),
        maxworkers=max(1, min(4, os.cpu_count() or 1)),
        iccprofile=icc or None,
        software="gpustack",
        description=description,
        metadata=None,  # no tifffile shape JSON
        extratags=list(extratags),
        **TIFF_COMPRESSION,
    )


def _encode_tiff(f, image, exif, icc, metadata) -> None:
    rgb = image.shape[2] == 3
    description = json.dumps(_jsonable(metadata), ensure_ascii=False) if metadata else None
    if image.shape[2] == 1:
        data = image[:, :, 0]
    elif rgb:
        data = image
    else:  # 2 or 4-8 channels (microscopy): a grayscale page per channel
        data = np.ascontiguousarray(np.moveaxis(image, -1, 0))
    _tiff(
        f,
        data,
        "rgb" if rgb else "minisblack",
        icc=icc,
        description=description,
        extratags=tiff_extratags(parse_exif_bytes(exif)),
    )


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _encode_png(f, image, exif, icc, metadata) -> None:
    png = imagecodecs.png_encode(image if image.shape[2] == 3 else image[:, :, 0], level=PNG_LEVEL)
    if png[12:16] != b"IHDR":
        raise RuntimeError("imagecodecs.png_encode did not start with IHDR")
    chunks = []
    if icc:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc)))
    if exif:
        chunks.append(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    for key, value in (metadata or {}).items():
        text = value if isinstance(value, str) else json.dumps(_jsonable(value), ensure_ascii=False)
        keyword = str(key).encode("latin-1", "replace")[:79]
        chunks.append(_png_chunk(b"iTXt", keyword + b"\0\0\0\0\0" + text.encode("utf-8")))
    end_of_ihdr = 8 + 25
    f.write(png[:end_of_ihdr])
    for chunk in chunks:
        f.write(chunk)
    f.write(png[end_of_ihdr:])


def _encode_jpeg(f, image, exif, icc, metadata) -> None:
    options = {"quality": JPEG_QUALITY, "subsampling": 0}
    if icc:
        options["icc_profile"] = icc
    if exif and len(exif) > _JPEG_EXIF_MAX:
        warnings.warn(f"EXIF block of {len(exif)} bytes does not fit a JPEG segment; the JPEG is written without it")
    elif exif:
        options["exif"] = exif
    if metadata:
        options["comment"] = json.dumps(_jsonable(metadata), ensure_ascii=False)
    Image.fromarray(image if image.shape[2] == 3 else image[:, :, 0]).save(f, format="JPEG", **options)


# --------------------------------------------------------------------------- staging and commit

#: Held while temporaries are created, committed or cancelled: a commit is never half done when
#: :func:`cancel_outputs` runs, and nothing is published after it.
_LOCK = threading.Lock()
_LIVE: set["StagedOutputs"] = set()
_cancelled = False
_commits = 0  # commits begun in this process (see commits_started)
_CANCELLED = "the process that started this run is gone, so its outputs are not published; nothing was written"


class StagedOutputs:
    """The outputs of one run, written to temporary files and published together: all or none.

    A writer given ``stage=`` (:func:`write_image`, :func:`write_depth`, :func:`write_sidecar`)
    writes a hidden temporary file beside its destination, flushed and fsync'ed, and leaves it
    there; :meth:`commit` then moves every one into place, and if any move fails (or is
    interrupted) it undoes those already made, restoring the files they replaced. Leaving the
    ``with`` block without a commit deletes the temporaries.

    >>> with StagedOutputs() as stage:                                  # doctest: +SKIP
    ...     write_image("fused.tif", image, fmt="tiff", stage=stage)
    ...     write_depth("depth.tif", depth, stage=stage)
    ...     stage.commit()
    """

    def __init__(self):
        self._staged: list[tuple[Path, Path, bool]] = []  # (temporary, destination, overwrite)

    def __enter__(self) -> "StagedOutputs":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()

    def open(self, path: Path, overwrite: bool) -> tuple[Path, BinaryIO]:
        """A new temporary file beside ``path``, to be published there by :meth:`commit`."""
        with _LOCK:
            if _cancelled:
                raise OutputError(_CANCELLED)
            tmp, f = _open_temp(path)
            self._staged.append((tmp, path, overwrite))
            _LIVE.add(self)
        return tmp, f

    def discard(self) -> None:
        """Delete every temporary not yet published."""
        with _LOCK:
            self._discard()

    def _discard(self) -> None:
        for tmp, _, _ in self._staged:
            _unlink(tmp)
        self._staged = []
        _LIVE.discard(self)

    def commit(self) -> None:
        """Move every temporary into place, or none (OutputError, after undoing the moves made)."""
        global _commits
        with _LOCK:
            if _cancelled:
                self._discard()
                raise OutputError(_CANCELLED)
            _commits += 1
            moves, path = [], None
            try:
                for tmp, path, overwrite in self._staged:
                    move = _Move(tmp, path)
                    moves.append(move)
                    move.publish(overwrite)
            except BaseException as exc:
                for move in reversed(moves):
                    move.undo()
                self._discard()
                if isinstance(exc, OSError) and not isinstance(exc, GpustackError):
                    raise OutputError(f"cannot write {path}: {exc.strerror or exc}; check the permissions of "
                                      f"{path.parent}; nothing was written") from exc
                raise
            for move in moves:
                move.done()
            folders = {path.parent for _, path, _ in self._staged}
            self._staged = []
            _LIVE.discard(self)
        for folder in folders:
            _sync_folder(folder)


def commits_started() -> int:
    """How many commits this process has begun: a stop signal handler compares it with the count
    at the start of a run to tell whether the run has begun to publish (then it lets it finish)."""
    return _commits


def cancel_outputs() -> None:
    """Publish nothing more from this process and delete every temporary file of its runs. For a
    worker whose supervising process is gone (see ``gpustack.supervise``); a commit under way
    finishes first."""
    global _cancelled
    with _LOCK:
        _cancelled = True
        for stage in list(_LIVE):
            stage._discard()


class _Move:
    """One temporary moved onto its destination, and how to undo that."""

    def __init__(self, tmp: Path, path: Path):
        self.tmp, self.path = tmp, path
        self.inode = os.stat(tmp).st_ino  # the destination is ours to delete only while it is this file
        self.backup: Path | None = None  # the file it replaces, kept until the commit is done

    def publish(self, overwrite: bool) -> None:
        if overwrite:
            if os.path.lexists(self.path):
                self.backup = _temp_name(self.path, secrets.token_hex(4) + ".old")
                try:
                    os.link(self.path, self.backup)  # the destination stays in place meanwhile
                except OSError:
                    os.replace(self.path, self.backup)  # no hard links here
            os.replace(self.tmp, self.path)
            return
        try:
            os.link(self.tmp, self.path)  # fails if path exists: no clobbering, no race
        except FileExistsError:
            raise OutputError(f"output {self.path} appeared while it was written; pass --overwrite to replace "
                              f"it") from None
        except OSError:
            # no hard links here (FAT, some network shares): check, then rename (racy, see the module docstring)
            if os.path.lexists(self.path):
                raise OutputError(f"output {self.path} exists; pass --overwrite (overwrite=True) to replace "
                                  f"it") from None
            os.replace(self.tmp, self.path)
            return
        _unlink(self.tmp)

    def undo(self) -> None:
        if self.backup is not None and os.path.lexists(self.backup):
            try:
                os.replace(self.backup, self.path)
            except OSError:
                pass
            _unlink(self.backup)  # still there if the move had not happened (both names, one file)
            return
        try:
            if os.lstat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass

    def done(self) -> None:
        if self.backup is not None:
            _unlink(self.backup)


def _atomic_write(path: Path, write: Callable[[BinaryIO], object], *, overwrite: bool,
                  stage: StagedOutputs | None = None) -> None:
    """Write through ``write(file)`` into a temporary file; move it to ``path`` now, or with the
    other outputs of ``stage`` when it commits."""
    if not overwrite and os.path.lexists(path):
        raise OutputError(f"output {path} exists; pass --overwrite (overwrite=True) to replace it")
    own = stage is None
    if own:
        stage = StagedOutputs()
    try:
        tmp, f = stage.open(path, overwrite)
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if own:
            stage.commit()
    except BaseException as exc:
        stage.discard()
        if isinstance(exc, OSError) and not isinstance(exc, GpustackError):
            raise OutputError(
                f"cannot write {path}: {exc.strerror or exc}; check the free space and permissions of {path.parent}"
            ) from exc
        raise


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _temp_name(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}.tmp")


def remove_temporaries(path) -> None:
    """Delete the temporary files that a run killed while writing ``path`` left beside it."""
    path = Path(path)
    for tmp in path.parent.glob(_temp_name(Path(glob.escape(path.name)), "*").name):
        _unlink(tmp)


def _open_temp(path: Path) -> tuple[Path, BinaryIO]:
    while True:
        tmp = _temp_name(path, secrets.token_hex(4))
        try:
            return tmp, open(tmp, "xb")  # O_EXCL, mode 0o666 less the umask, as for any new file
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(
                f"cannot write {path}: {exc.strerror or exc} in folder {path.parent}; "
                "check that it exists and is writable, or choose another path"
            ) from exc


def _sync_folder(folder: Path) -> None:
    """fsync the folder so the rename itself survives a crash (POSIX; a no-op elsewhere)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- JSON


def _jsonable(obj):
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, enum.Enum):
        return _jsonable(obj.value)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return f"<{len(obj)} bytes>"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    return str(obj)
