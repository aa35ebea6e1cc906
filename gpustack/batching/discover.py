"""What the stacks of a batch are, and what each one's outputs are called.

- :func:`find_stacks`: ``subfolders`` (each folder under a root that holds frames is one stack,
  named by its path relative to the root) or ``files`` (each multi-page TIFF, OME-TIFF or vendor
  microscopy z-stack is one, a multi-position file one per stage position).
- :func:`read_list`: a CSV, one stack per row (its inputs, an optional output name).
- :func:`output_paths`: the files a stack writes under the output folder.

Discovery only lists folders and reads TIFF headers; no pixel is decoded here.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import GpustackError, InputError
from ..io.frames import IMAGE_EXTENSIONS, VENDOR_EXTENSIONS, _natural_key, list_frames
from ..io.write import sidecar_path
from ..options import BATCH_FORMATS as FORMATS, DISCOVERY, OUTPUT_FORMATS, is_ome_path

_STACK_FILES = frozenset({".tif", ".tiff"}) | VENDOR_EXTENSIONS


@dataclass(frozen=True)
class StackJob:
    """One stack of a batch.

    Attributes
    ----------
    name : str
        The outputs' path relative to the output folder, without extension, ``/``-separated
        (``slide1/fov_003``).
    inputs : tuple of str
        What ``gpustack.stack`` is given: a folder, frame files or glob patterns.
    position : int or None
        The stage position to fuse, for one position of a multi-position microscopy file.
    microscopy : bool
        The inputs are microscopy files: the outputs are OME-TIFF unless a format is asked for.
    suffix : str or None
        The image's extension when the stack list named one (``a/b.png``).
    """

    name: str
    inputs: tuple
    position: int | None = None
    microscopy: bool = False
    suffix: str | None = None


def output_paths(job: StackJob, output_dir: Path, fmt: str | None, maps: dict) -> dict:
    """The files ``job`` writes: ``image``, ``sidecar`` and each map asked for in ``maps``
    (``{"depth_map": True, ...}``): ``<name>.depth.tif``, ``<name>.height.tif``,
    ``<name>.confidence.tif`` (``.ome.tif`` for microscopy stacks)."""
    suffix = job.suffix or fmt or (".ome.tif" if job.microscopy else ".tif")
    base = output_dir.joinpath(*PurePosixPath(job.name).parts)
    image = base.with_name(base.name + suffix)
    paths = {"image": image, "sidecar": sidecar_path(image)}
    map_suffix = ".ome.tif" if job.microscopy or suffix == ".ome.tif" else ".tif"
    for key, word in (("depth_map", "depth"), ("height_map", "height"), ("confidence_map", "confidence")):
        if maps.get(key):
            paths[key] = base.with_name(f"{base.name}.{word}{map_suffix}")
    return paths


def find_stacks(roots, mode: str = "subfolders", *, exclude=(), split_positions: bool = True) -> list[StackJob]:
    """The stacks under ``roots`` (folders, or stack files), in name order.

    With one root, names are relative to it (the root itself, when it holds frames, is named after
    its folder); with several, each name starts with its root's folder name. Folders in ``exclude``
    (the output folder) and hidden files and folders are skipped. A multi-position microscopy file
    is one stack per position (``<name>_pos<k>``) unless ``split_positions`` is False (one position
    was chosen for every file).

    Raises
    ------
    InputError
        A root that does not exist, a root without any stack, two stacks with one name.
    """
    if mode not in DISCOVERY:
        raise InputError(f"stacks must be one of {', '.join(DISCOVERY)}; got {mode!r}")
    # absolute: a worker of another machine, or another working folder, reads the same paths
    roots = [Path(r).absolute() for r in ([roots] if isinstance(roots, (str, os.PathLike)) else roots)]
    if not roots:
        raise InputError("no ROOT given; pass the folder(s) that hold the stacks")
    excluded = {_key(p) for p in exclude}
    jobs = []
    for root in roots:
        if not root.exists():
            raise InputError(f"no such file or folder: {root}; check the path")
        prefix = _stem(root.name) if root.is_file() else root.resolve().name
        found, seen = _stacks_in(root, mode, excluded, split_positions)
        if not found:
            raise InputError(_nothing_found(root, mode, seen))
        for job in found:
            name = job.name if len(roots) == 1 else f"{prefix}/{job.name}" if job.name != prefix else prefix
            jobs.append(_renamed(job, name))
    check_names(jobs)
    return jobs


def _renamed(job: StackJob, name: str) -> StackJob:
    return StackJob(name, job.inputs, job.position, job.microscopy, job.suffix)


def _key(path) -> str:
    return os.path.normcase(str(Path(path).resolve()))


def _stacks_in(root: Path, mode: str, excluded: set, split: bool) -> tuple[list[StackJob], dict]:
    """The stacks under one root, and what was seen besides (for the message when none is found)."""
    seen = {"files": 0, "single": 0}
    if root.is_file():
        return _file_stacks(root, _stem(root.name), seen, split), seen
    jobs = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _key(Path(folder, d)) not in excluded)
        frames = sorted(f for f in files if not f.startswith(".") and _suffix(f) in IMAGE_EXTENSIONS)
        seen["files"] += len(frames)
        rel = Path(folder).relative_to(root).as_posix()
        if mode == "subfolders":
            if frames:
                name = root.resolve().name if rel == "." else rel
                jobs.append(StackJob(name, (str(folder),), microscopy=any(_is_microscopy_name(f) for f in frames)))
            continue
        for f in frames:
            if _suffix(f) in _STACK_FILES:
                name = _stem(f) if rel == "." else f"{rel}/{_stem(f)}"
                jobs.extend(_file_stacks(Path(folder, f), name, seen, split))
            else:
                seen["single"] += 1
    return sorted(jobs, key=lambda j: _natural_key(j.name)), seen


def _file_stacks(path: Path, name: str, seen: dict, split: bool) -> list[StackJob]:
    """The stacks of one file: none (a single image), one, or one per stage position."""
    microscopy = _is_microscopy_name(path.name)
    try:
        sources = list_frames([path])
    except GpustackError:  # unreadable: a stack that fails with its own error, in its turn
        return [StackJob(name, (str(path),), microscopy=microscopy)]
    if len(sources) < 2:
        seen["single"] += 1
        return []
    positions = sorted({s.stack.series for s in sources if s.stack is not None and s.stack.positions > 1})
    microscopy = microscopy or any(s.stack is not None for s in sources)
    if len(positions) < 2 or not split:
        return [StackJob(name, (str(path),), microscopy=microscopy)]
    width = len(str(positions[-1]))
    return [StackJob(f"{name}_pos{p:0{width}d}", (str(path),), position=p, microscopy=True) for p in positions]


def _nothing_found(root: Path, mode: str, seen: dict) -> str:
    if mode == "files":
        what = f" ({seen['single']} single-image files)" if seen["single"] else ""
        hint = "; for folders of frames use --stacks subfolders" if seen["single"] else ""
        return f"{root} holds no multi-page TIFF, OME-TIFF or microscopy z-stack{what}{hint}"
    return (f"{root} holds no stack: no folder in it holds image files ({', '.join(sorted(IMAGE_EXTENSIONS)[:6])}, "
            f"...); check the path")


def check_names(jobs: list[StackJob]) -> None:
    """InputError when two stacks would write the same outputs (names equal but for case)."""
    names: dict[str, StackJob] = {}
    for job in jobs:
        key = job.name.casefold()  # one output on a case-insensitive file system
        if key in names:
            raise InputError(f"two stacks would write the same outputs {job.name!r}: {', '.join(names[key].inputs)} "
                             f"and {', '.join(job.inputs)}; give each its own name (a --list CSV with names)")
        names[key] = job


def read_list(path) -> list[StackJob]:
    """The stacks of a CSV list: one row per stack, ``inputs[,name]``.

    ``inputs`` is a folder, a file or a glob pattern, or several separated by ``;``; relative
    paths are relative to the CSV's folder. ``name`` (optional) is the outputs' path relative to the
    output folder (``slide1/fov3``, or with an extension, ``slide1/fov3.png``, for that format);
    without it, the input's name. A first row ``input,name`` is a header; blank rows and rows
    starting with ``#`` are skipped.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise InputError(f"cannot read the stack list {path}: {exc.strerror or exc}; check the path") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"stack list {path} is not a UTF-8 CSV file ({exc}); one row per stack: inputs[,name]") \
            from exc
    jobs = []
    for line, row in enumerate(rows, 1):
        cells = [c.strip() for c in row]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        if line == 1 and cells[0].casefold() in ("input", "inputs", "path", "frames"):
            continue
        if len(cells) > 2 and any(cells[2:]):
            raise InputError(f"{path}, row {line}: {len(cells)} columns; a row is inputs[,name] (several inputs "
                             f"separated by ';')")
        inputs = tuple(str(p if p.is_absolute() else path.parent / p)
                       for p in (Path(x.strip()) for x in cells[0].split(";") if x.strip()))
        name = cells[1] if len(cells) > 1 and cells[1] else _stem(Path(inputs[0]).name)
        jobs.append(make_job(name, inputs, where=f"{path}, row {line}: "))
    if not jobs:
        raise InputError(f"stack list {path} lists no stack; one row per stack: inputs[,name]")
    check_names(jobs)
    return jobs


def make_job(name: str, inputs, *, where: str = "") -> StackJob:
    """A StackJob of ``inputs`` (a path or several, made absolute) named ``name``: a relative path
    inside the output folder, with an output extension for that format; ``where`` starts the error
    message."""
    inputs = tuple(str(Path(p).absolute()) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs))
    if not inputs:
        raise InputError(f"{where}stack {name!r} has no inputs; give its folder, files or glob patterns")
    name = str(name).replace("\\", "/")
    suffix = next((s for s in (".ome.tif", ".ome.tiff") if name.lower().endswith(s)), None) or (
        Path(name).suffix.lower() if Path(name).suffix.lower() in OUTPUT_FORMATS else None)
    if suffix:
        name = name[: -len(suffix)]
        suffix = ".ome.tif" if suffix.startswith(".ome") else suffix
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or any(p in ("..", ".") for p in parts) or any(":" in p for p in parts):
        raise InputError(f"{where}output name {name!r} must be a relative path inside the output folder "
                         f"(such as slide1/fov3)")
    microscopy = any(_is_microscopy_name(i) for i in inputs) or (suffix is not None and is_ome_path("x" + suffix))
    return StackJob("/".join(parts), inputs, microscopy=microscopy, suffix=suffix)


def _suffix(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def _stem(name: str) -> str:
    lower = name.lower()
    for ext in (".ome.tiff", ".ome.tif"):
        if lower.endswith(ext):
            return name[: -len(ext)]
    return os.path.splitext(name)[0]


def _is_microscopy_name(name: str) -> bool:
    return is_ome_path(name) or _suffix(str(name)) in VENDOR_EXTENSIONS
