"""Depth-map smoothing and the ``depthmap`` fusion method (Zerene's DMap / Helicon's B family).

Pass 1 (the pyramid fusion) yields the raw depth (sub-frame argmax of the finest
level's local energy) and its confidence. The depth is smoothed with weights
equal to the confidence, so that confident pixels (textured, in focus somewhere)
fill in the uncertain ones. Pass 2 re-reads the frames and takes every pixel
from the frames its smoothed depth names: frame k gets weight
max(0, 1 - |depth - k|), i.e. a linear blend of the two nearest depths. Where
the smoothed confidence is below the contrast threshold (never-in-focus
background, smooth areas), the pyramid result is used instead, with a soft
transition of +-``BLEND_WIDTH / 2`` in confidence.
"""

from __future__ import annotations

import numpy as np

BLEND_WIDTH = 0.1


def smooth_depth(be, depth, conf, radius: int):
    """(smoothed depth, confidence sum, window area) for a confidence-weighted box^2 filter.

    The confidence sum over the window divided by ``area`` is the smoothed confidence.

    Each plane is box-filtered twice along rows and twice along columns (close to
    a Gaussian of sigma ~ 0.8 * radius). Pixels with zero weight all around keep
    their raw depth.
    """
    if radius == 0:
        return depth, conf, 1.0
    shape = depth.shape
    f32 = np.float32
    num = be.empty(shape, f32)
    den = be.empty(shape, f32)
    tmp = be.empty(shape, f32)
    be.depth_weight(depth, conf, num)
    for src, plane in ((num, num), (conf, den)):
        be.filter_box_rows(src, tmp, radius)
        be.filter_box_cols(tmp, plane, radius)
        be.filter_box_rows(plane, tmp, radius)
        be.filter_box_cols(tmp, plane, radius)
    out = be.empty(shape, f32)
    be.depth_ratio(num, den, depth, out)
    area = float((2 * radius + 1) ** 4)
    return out, den, area


def blend_params(threshold: float, area: float = 1.0) -> tuple[np.float32, np.float32]:
    """(lo, inv_width) of the blend mask m = clip((conf_sum - lo) * inv_width, 0, 1), where
    ``conf_sum`` is the confidence summed over a window of ``area`` pixels."""
    lo = (threshold - BLEND_WIDTH / 2) * area
    return np.float32(lo), np.float32(1.0 / (BLEND_WIDTH * area))
