"""Reading frames and writing results (the host ends of the pipeline).

- :func:`list_frames`, :func:`sources_from_arrays`: the frames of a stack, in shot order.
- :func:`read_frame`: decode one frame (JPEG, PNG, TIFF, multi-page TIFF, camera RAW, array, a
  focal plane of a microscopy file: :mod:`gpustack.io.ome` for OME-TIFF and ImageJ hyperstacks,
  :mod:`gpustack.io.vendor` for ND2, CZI and LIF through bioio).
- :mod:`gpustack.io.ome_write`: calibrated OME-TIFF outputs.
- :func:`check_outputs`, :func:`write_image`, :func:`write_depth`, :func:`write_sidecar`,
  :func:`sidecar_path`, :class:`StagedOutputs`: pre-flight checks and atomic writes, a run's
  outputs published together.
"""

from .frames import (IMAGE_EXTENSIONS, RAW_EXTENSIONS, Frame, FrameSource, file_stats, list_frames, read_frame,
                     sources_from_arrays)
from .raw import POSTPROCESS, read_raw
from .write import StagedOutputs, check_outputs, sidecar_path, write_depth, write_image, write_sidecar

__all__ = [
    "IMAGE_EXTENSIONS",
    "POSTPROCESS",
    "RAW_EXTENSIONS",
    "StagedOutputs",
    "Frame",
    "FrameSource",
    "check_outputs",
    "file_stats",
    "list_frames",
    "read_frame",
    "read_raw",
    "sidecar_path",
    "sources_from_arrays",
    "write_depth",
    "write_image",
    "write_sidecar",
]
