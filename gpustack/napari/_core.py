"""What the napari reader and widget do, as pure functions (no napari, no Qt): tested headless."""

from __future__ import annotations

import numpy as np

from .. import stack as _stack
from ..errors import GpustackError
from ..io import list_frames, read_frame
from ..io.ome import array_sources


def read_stack(path) -> list[tuple]:
    """``[(data, kwargs, "image")]``: the z-stack at ``path`` (a folder of frames or a microscopy
    file) as one layer, (Z, C, Y, X) for several channels (``rgb`` (Z, Y, X, 3) for photographs),
    its ``scale`` (z-step, [1,] pixel size, microns; 1 where unknown), ``axis_labels`` and the channel
    names and calibration in ``metadata["gpustack"]``. Only the first stack of a file holding
    several (time points, positions)."""
    sources = list_frames([path])
    first = sources[0].stack
    if first is not None:
        sources = [s for s in sources if s.stack is not None and s.stack.key == first.key]
    frames = [read_frame(s, k).data for k, s in enumerate(sources)]
    data = np.stack(frames)  # (Z, Y, X, C)
    c = data.shape[-1]
    micro = first is not None
    cal = first.calibration if micro else None
    py, px = cal.pixel_size if micro and cal.pixel_size else (1.0, 1.0)
    dz = cal.z_step if micro and cal.z_step else 1.0
    meta = {"gpustack": {"source": str(path), "channel_names": list(first.channel_names) if micro else
                         [f"C{i}" for i in range(c)], "calibration": cal.to_dict() if micro else None}}
    if not micro and c == 3:
        return [(data, {"name": _name(path), "rgb": True, "scale": (dz, py, px), "metadata": meta}, "image")]
    if c == 1:
        return [(data[..., 0], {"name": _name(path), "scale": (dz, py, px), "axis_labels": ("z", "y", "x"),
                                "metadata": meta}, "image")]
    return [(np.ascontiguousarray(np.moveaxis(data, -1, 1)),
             {"name": _name(path), "scale": (dz, 1.0, py, px), "axis_labels": ("z", "c", "y", "x"), "metadata": meta},
             "image")]


def _name(path) -> str:
    from pathlib import Path

    return Path(path).name


def zcyx(data, rgb: bool = False) -> np.ndarray:
    """A layer's data as (Z, C, Y, X): (Z, Y, X) gains C = 1; an rgb layer (Z, Y, X, 3) is turned."""
    a = np.asarray(data)
    if rgb:
        return np.moveaxis(a, -1, 1)
    if a.ndim == 3:
        return a[:, None]
    if a.ndim == 4:
        return a
    raise GpustackError(f"the layer has shape {a.shape}; a z-stack is (Z, Y, X) or (Z, C, Y, X), Z first")


def fuse_layer(data, *, scale=None, rgb=False, metadata=None, name="layer", progress=None, **options) -> list[tuple]:
    """Fuse a z-stack layer: ``[(fused, kwargs, "image"), (height, kwargs, "image")]`` with the
    layer's XY scale (the height map only when the z-step is known: the layer's Z scale, or the
    calibration in ``metadata``). ``options`` are ``gpustack.stack`` keywords (``focus_channel``,
    ``per_channel``, ``method``...); ``progress(done, total)`` is called per fused plane."""
    planes = zcyx(data, rgb)
    z, c = planes.shape[:2]
    info = (metadata or {}).get("gpustack", {})
    names = info.get("channel_names") or [f"C{i}" for i in range(c)]
    scale = tuple(scale) if scale is not None else (1.0,) * (planes.ndim if not rgb else 4)
    py, px = float(scale[-2 if not rgb else -3]), float(scale[-1 if not rgb else -2])
    dz = float(scale[0])
    calibrated = (info.get("calibration") or {}).get("z_step_um") is not None or dz != 1.0
    sources = array_sources(planes, channel_names=names[:c], pixel_size=(py, px), z_step=dz if calibrated else None,
                            name=name)

    def on_event(ev):
        if progress is not None and ev.stage == "fuse":
            progress(ev.index, z)

    options.setdefault("align", "none")
    result = _stack(sources, progress=on_event, **options)
    fused = result.linear if planes.dtype == np.float32 else result.image
    fused = fused if fused.ndim == 2 else np.moveaxis(fused, -1, 0)
    layers = [(fused, {"name": f"{name} fused", "scale": ((1.0,) if fused.ndim == 3 else ()) + (py, px),
                       "metadata": {"gpustack": {"channel_names": list(result.channel_names)}}}, "image")]
    if result.height is not None:
        h = result.height
        layers.append((h, {"name": f"{name} height (µm)", "scale": ((1.0,) if h.ndim == 3 else ()) + (py, px),
                           "colormap": "viridis"}, "image"))
    return layers
