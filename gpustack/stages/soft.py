"""The ``soft`` fusion (the default method): one streaming pass, per pixel a soft selection of
the sharpest frames.

Per frame, a focus score at full resolution: the squared Laplacian coefficients of all channels
summed over 3x3 windows at the four finest pyramid levels, each coarser sum expanded onto the
finer grid and added, the fourth at 3/8 weight (``score = E0 + expand(E1 + expand(E2 +
expand(E3 / (8/3))))``): fine enough not to spread a sharp edge's energy far over its neighbours,
coarse enough (the third level sees about 12 px, the fourth about 24) to find the frame in which
a faint texture, or the nearest texture of the same surface, is sharpest, rather than the frame
in which a defocused neighbour's blur skirt crosses it, and to name one frame for a whole small
structure (a cell under a microscope) rather than a different one for each of its parts.

Each frame's weight at a pixel is ``((score + floor) / best)^POWER``, ``best`` the highest
``score + floor`` of the stack there (streaming: what was accumulated is rescaled whenever a
frame beats the best so far, ``backends/*/soft.py``). ``floor`` is the stack's noise level in the
score's units, measured once on the first frame folded (``noise_floor``: the median absolute
diagonal difference of 2x2 blocks, which texture hardly reaches, as a noise variance, times the
score's window area and the channels): where no frame is clearly sharper than the noise, several
frames share the pixel and their noise averages out; on a clean stack the high power lets the
sharpest frame take it alone.
The fold keeps two weighted sums per pixel: of the frames and of their finest Laplacian level.
The result is the first's low-pass (one reduce and expand) plus the second: every pixel's tone
comes from the frames sharp at that pixel (no coarse level averaged over the stack, so no tone
shift), and the finest detail is blended per pixel as well, which keeps the seams between frames
below the finest level. The depth map is the mean frame index under weights of its own, sharper:
``((score + floor / 4) / (best - 3/4 floor))^20`` (``DEPTH_FLOOR``, ``DEPTH_POWER``; the same
running best, its own sums and rescaling), so that the frames the floor lets share a noisy pixel do
not spread the index; its confidence ``(best - mean score) / best``.

State: ``2C + 5`` full-size float32 planes (``2C + 2`` without the maps: the depth map's two sums and
the sum of the scores, which its confidence needs, are not kept), plus the frame's first
``SCORE_LEVELS + 1`` Gaussian levels and the score per level, whatever the number of frames (no
Laplacian level is stored: ``soft_score`` and ``soft_fold`` make it, row by row, where they use
it); with ``track_depth`` (a height map) 7 more: the
best score's plane and its neighbours' scores (``stages.fuse.DepthTracker``), for a sub-plane
index by a parabola, which the height map uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fuse import DepthTracker, FrameLevels, focus_view, level_shapes

POWER = 24         # exponent of the weight (score ratio)
RMIN = np.float32(0.5)  # ratios below this weigh 0 (0.5**24 = 6e-8, a normal float)
RADIUS = 1          # the score's window at every level: 3x3
SCORE_LEVELS = 4    # the finest levels summed into the score
#: each level's weight in the score (the finest first; applied as a division by float32(1 / weight),
#: 8/3 rounded, by ``fuse_divide``). The fourth level at 3/8: at 1
#: it cost the clean coffee/steps 1.6 dB in the interior, at 0 (three levels) the microscope stack's
#: tone error was 5.8 levels of 255 against 4.1 (README, Quality; bench/quality.py). Only the
#: coarsest of the ``SCORE_LEVELS`` may weigh other than 1: a finer level's sums are added to the
#: coarser score in the same pass that makes them (``soft_score``, ``soft_fold``)
LEVEL_WEIGHTS = (1.0, 1.0, 1.0, 0.375)
NOISE_LEVELS = 3    # the finest levels whose windows the noise floor counts (noise_floor)
FLOOR_SCALE = 6.0   # the floor in units of the noise's expected score (bench/quality.py: 3 to 10 within 0.3 dB)
#: the depth map's weights, ``((score + DEPTH_FLOOR * floor) / (best score + DEPTH_FLOOR * floor))^DEPTH_POWER``:
#: a quarter of the floor, sharper than the image's, so that averaging noisy frames does not spread
#: the depth index (the image's weights gave immunohistochemistry at ISO 6400 a depth MAE of 0.66
#: frames, these 0.27); a lower power than the image's, which keeps the sub-frame interpolation
#: between frames of about equal score (power 24 cost the grass scene 0.011 frames of MAE)
#: (README, Quality; bench/quality.py)
DEPTH_FLOOR = 0.25
DEPTH_POWER = 20


def coarsest_weighted() -> bool:
    """Whether the coarsest score level has a weight (``LEVEL_WEIGHTS``); a weight other than 1 on
    a finer level, or on the finest when it is the only one, is refused."""
    weights = LEVEL_WEIGHTS[:SCORE_LEVELS]
    if any(wt != 1 for wt in weights[:-1]) or (SCORE_LEVELS == 1 and weights[0] != 1):
        raise ValueError(f"soft: only the coarsest of several score levels may be weighted, got {weights}")
    return weights[-1] != 1


@dataclass
class SoftState:
    """Per-pixel state of the soft fusion (float32; planes (H, W), images (C, H, W))."""

    max_s: object      # best score + floor so far
    den: object        # sum of the weights (relative to max_s)
    depth_den: object  # sum of the depth weights (relative to max_s minus the floor's shift)
    depth_num: object  # sum of depth weight * frame index
    sum_s: object      # sum of score + floor over the frames (for the confidence)
    acc: object        # sum of weight * frame (C, H, W)
    acc_lap: object    # sum of weight * finest Laplacian level (C, H, W)


def depth_shift(floor) -> np.float32:
    """What the depth weights take off the floor: ``floor * (1 - DEPTH_FLOOR)`` in float32 (host)."""
    return np.float32(np.float32(floor) * np.float32(1.0 - DEPTH_FLOOR))


def select_median(a: np.ndarray) -> np.float32:
    """``np.median(a)``, the same float32, of a 1-D float32 array, in a third of its time on millions
    of values: a strided sample's middle values bracket the median, the values below the bracket are
    counted and the few inside it partitioned (the bracket is checked to hold the middle, else
    ``np.median`` decides), and an even count's two middle values are averaged by ``np.median``
    itself. NaN anywhere gives NaN, as ``np.median`` does (without its warning); short arrays go to
    ``np.median``."""
    n = a.size
    if a.dtype != np.float32 or a.ndim != 1 or n < 4096:
        return np.median(a)
    if np.isnan(a).any():
        return np.float32(np.nan)
    sample = np.sort(a[:: max(1, n // 65536)])
    m = sample.size
    margin = int(4 * np.sqrt(m)) + 16  # order statistics of the sample stray about sqrt(m) / 2
    lo, hi = sample[max(m // 2 - margin, 0)], sample[min(m // 2 + margin, m - 1)]
    below = int(np.count_nonzero(a < lo))
    inside = a[(a >= lo) & (a <= hi)]
    ranks = sorted({(n - 1) // 2 - below, n // 2 - below})  # the middle value, or the two
    if ranks[0] < 0 or ranks[-1] >= inside.size:
        return np.median(a)
    part = np.partition(inside, ranks)
    picked = [part[r] for r in ranks]
    return picked[0] if len(picked) == 1 else np.median(np.array(picked, np.float32))


def noise_floor(frame) -> np.float32:
    """The floor added to every score, from a host (C, H, W) float32 frame (the first one folded):
    the noise variance sigma^2 estimated from the diagonal differences d = x00 - x01 - x10 + x11 of
    the 2x2 blocks of every channel (sigma = median|d| / 0.6745 / 2, Donoho's estimate; natural
    images, and a lens-blurred camera's even more, have little energy along both diagonals at the
    pixel pitch, so texture barely raises it), times the channels and the score's window area (3x3
    at each of the ``NOISE_LEVELS`` finest levels: white noise's energy per coefficient falls from
    0.89 sigma^2 at the finest level to 0.05, 0.01 and 0.002 at the next three, so counting the
    fourth level's window too would raise the floor by a third for no noise; measured, that cost
    immunohistochemistry at ISO 6400 0.2 dB), times ``FLOOR_SCALE``. The differences are float32, one
    channel at a time (a quarter plane each, not a float64 copy of the frame); the same host code
    on bit-identical frames, so every backend gets the same float32."""
    c, h, w = frame.shape
    h, w = h - h % 2, w - w % 2
    diffs = []
    for ch in range(c):
        x = np.asarray(frame[ch], dtype=np.float32)
        d = x[0:h:2, 0:w:2] - x[0:h:2, 1:w:2]
        d -= x[1:h:2, 0:w:2]
        d += x[1:h:2, 1:w:2]
        diffs.append(np.abs(d, out=d).ravel())
    sigma = float(select_median(np.concatenate(diffs))) / 0.6745 / 2.0
    area = NOISE_LEVELS * (2 * RADIUS + 1) ** 2
    return np.float32(FLOOR_SCALE * area * c * sigma * sigma)


class SoftFusion(FrameLevels):
    """Running state of the soft fusion of frames of shape (C, H, W) on backend ``be``.

    Use as ``PyramidFusion``: write a frame into ``input``, ``fold(k)``; then ``depth()`` and
    ``collapse()``. ``focus_channel``: the score (and the noise floor) from that channel alone;
    every channel still gets the same weights, so the channels stay registered. ``maps=False``: no
    depth map nor confidence (the image is the same bytes).
    """

    def __init__(self, be, channels: int, height: int, width: int, *, focus_channel: int | None = None,
                 track_depth: bool = False, maps: bool = True):
        if track_depth and not maps:
            raise ValueError("SoftFusion: track_depth (the height map) needs maps")
        self.be = be
        self.maps = maps
        self.channels = channels
        self.focus = focus_view(channels, focus_channel)
        self.focus_channel = focus_channel
        self.track_depth = track_depth
        self.shapes = level_shapes(height, width, SCORE_LEVELS + 1)
        f32 = np.float32
        c = channels
        plane = (height, width)
        self.g = [be.empty((c, h, w), f32) for h, w in self.shapes]
        self.score = be.empty(plane, f32)
        self.scores = [self.score] + [be.empty(s, f32) for s in self.shapes[1:SCORE_LEVELS]]
        # the coarsest level's sums before its weight (a plane of that level's size), if it has one
        self._unweighted = be.empty(self.shapes[SCORE_LEVELS - 1], f32) if coarsest_weighted() else None
        self.use_stack_state(self.new_stack_state())

    STACK_FIELDS = ("state", "floor", "tracker", "count")

    def new_stack_state(self) -> dict:
        be, c, f32 = self.be, self.channels, np.float32
        plane = self.shapes[0]
        sums = {name: be.full(plane, 0.0, f32) if self.maps else None for name in ("depth_den", "depth_num", "sum_s")}
        state = SoftState(max_s=be.full(plane, 0.0, f32), den=be.full(plane, 0.0, f32), **sums,
                          acc=be.full((c, *plane), 0.0, f32), acc_lap=be.full((c, *plane), 0.0, f32))
        # the height map's sub-plane index: the best score's plane and a parabola through its
        # neighbours' scores (the weighted mean index of the depth map pulls towards whole planes)
        tracker = DepthTracker(be, *plane) if self.track_depth else None
        return {"state": state, "floor": None, "tracker": tracker, "count": 0}

    def fold(self, k: int) -> None:
        """Fold frame ``k`` (shot index), written in ``input``, into the state (``input`` is free for
        the next frame afterwards); ``self.score`` is left with its focus score (on the first frame,
        the noise floor is measured first).

        The Gaussian levels stay Gaussian: each level's Laplacian is made where it is used, never
        stored; past ``g[1]`` (which the fold reads whole) the levels are made of the focus channels
        only. The coarser levels' scores first (``soft_score``), then the finest level's with the
        fold, in one pass (``soft_fold``)."""
        be, g, focus = self.be, self.g, self.focus
        if self.floor is None:
            self.floor = noise_floor(be.to_host(focus(g[0])))  # sync: once per stack
        be.pyramid_reduce(g[0], g[1])
        for lv in range(1, SCORE_LEVELS):
            be.pyramid_reduce(focus(g[lv]), focus(g[lv + 1]))
        for lv in range(SCORE_LEVELS - 1, 0, -1):
            coarsest = lv + 1 == SCORE_LEVELS
            weighted = coarsest and self._unweighted is not None  # its sums, then divided by 1 / its weight
            out = self._unweighted if weighted else self.scores[lv]
            be.soft_score(focus(g[lv]), focus(g[lv + 1]), None if coarsest else self.scores[lv + 1], RADIUS, out)
            if weighted:
                be.fuse_divide(out.reshape((1,) + out.shape), np.float32(1.0 / LEVEL_WEIGHTS[lv]),
                               self.scores[lv].reshape((1,) + out.shape))
        be.soft_fold(g[0], g[1], self.scores[1] if SCORE_LEVELS > 1 else None, self.focus_channel, RADIUS,
                     self.score, self.state, k, self.floor, depth_shift(self.floor), POWER, DEPTH_POWER, RMIN)
        if self.tracker is not None:
            self.tracker.track(self.score, 0, k)
        self.count += 1

    def depth(self):
        """(depth, confidence), float32 (H, W): the mean frame index under the depth's weights, and
        (best - mean score) / best; (None, None) without ``maps``. Call once, after the last
        ``fold`` (it also makes the image's weighted means); ``collapse`` then gives the image."""
        be = self.be
        shape = self.shapes[0]
        depth = be.empty(shape, np.float32) if self.maps else None
        conf = be.empty(shape, np.float32) if self.maps else None
        be.soft_finish(self.state, np.float32(self.count), depth, conf)
        return depth, conf

    def height_index(self):
        """float32 (H, W): the sub-plane index of the highest focus score (a parabola through it
        and its neighbours' scores), for the height map; needs ``track_depth``. Call after the last
        ``fold``, before ``depth``."""
        index, _conf = self.tracker.finalize(self.count)
        self.tracker = None
        return index

    def contrast(self):
        """float32 (H, W) (needs ``maps``): how far the best frame's score stands above the mean score, in noise
        floors, mapped to [0, 1) (``n / (n + 1)``): the height map's confidence (a dark background,
        only noise, stays low whatever the frames). Call after the last ``fold``, before ``depth``."""
        out = self.be.empty(self.shapes[0], np.float32)
        self.be.soft_contrast(self.state, np.float32(self.count), np.float32(self.floor), out)
        return out

    def collapse(self, release: bool = True):
        """The fused image, planar float32 (C, H, W), linear light (not clipped): the low-pass of
        the weighted mean frame plus the weighted mean finest level. Call after ``depth``.
        ``release=False`` keeps the frame's scratch (for another stack's state)."""
        be, st = self.be, self.state
        be.pyramid_reduce(st.acc, self.g[1])
        be.pyramid_expand_add(st.acc_lap, self.g[1])
        out = st.acc_lap
        self.state = self.tracker = None
        if release:
            self.g = self.score = self.scores = self._unweighted = None
        return out
