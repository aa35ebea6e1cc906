"""napari reader: ``napari_get_reader(path)`` (npe2 command ``gpustack.read_stack``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import GpustackError
from ..io.frames import IMAGE_EXTENSIONS
from ._core import read_stack


def napari_get_reader(path):
    """``read_stack`` for a folder of frames or one stack file; None (another reader's turn) for
    anything else, or several paths."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if not (p.is_dir() or p.suffix.lower() in IMAGE_EXTENSIONS):
        return None

    def reader(path):
        try:
            return read_stack(path[0] if isinstance(path, list) else path)
        except GpustackError as exc:  # napari shows the message
            raise ValueError(str(exc)) from exc

    return reader
