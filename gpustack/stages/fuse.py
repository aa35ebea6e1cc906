"""Streaming Laplacian-pyramid fusion (Burt & Adelson 1983; selection by local energy).

Per frame: build the Gaussian pyramid in place, turn it into the Laplacian
pyramid in place, and fold it into the running state: per level the coefficient
of highest local energy so far (energy = sum of squared coefficients of all
channels in a (2r+1)^2 window), the coarsest level as a running sum (its mean is
taken at the end). The finest level's squared coefficients, summed over a
wider window (``depth_radius``), are the focus score of the depth map: per
pixel the best frame, the scores of its two neighbours (for a parabola) and the
sum of all scores (for the confidence). Memory is fixed by the frame size: the
state never grows with the number of frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

MIN_COARSEST = 16  # auto levels: the coarsest level keeps at least this many pixels on its short side
MAX_LEVELS = 10
MIN_FRAME = 8  # smallest frame side accepted


def level_shapes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """(H, W) of each pyramid level, finest first: each level is ((H+1)//2, (W+1)//2) of the one above."""
    shapes = [(height, width)]
    for _ in range(levels - 1):
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def auto_levels(height: int, width: int) -> int:
    """As many levels as keep the coarsest one at least ``MIN_COARSEST`` px on its short side (2 at least)."""
    levels = 1
    h, w = height, width
    while levels < MAX_LEVELS and min((h + 1) // 2, (w + 1) // 2) >= MIN_COARSEST:
        h, w = (h + 1) // 2, (w + 1) // 2
        levels += 1
    return max(levels, 2)


def check_levels(height: int, width: int, levels: int | None) -> int:
    """The number of levels to use; an explicit one must keep the coarsest level >= 4 px."""
    if min(height, width) < MIN_FRAME:
        raise InputError(f"frames of {width}x{height} are too small to stack; they must be at least "
                         f"{MIN_FRAME}x{MIN_FRAME} pixels")
    if levels is None:
        return auto_levels(height, width)
    h, w = level_shapes(height, width, levels)[-1]
    if min(h, w) < 4:
        most = 1
        while min(level_shapes(height, width, most + 1)[-1]) >= 4:
            most += 1
        raise InputError(f"levels={levels} is too many for {width}x{height} frames (the coarsest level "
                         f"would be {w}x{h}); use at most {most}, or leave levels unset")
    return levels


def focus_view(channels: int, focus_channel: int | None):
    """``view(image)``: the part of a (C, H, W) image the focus measure reads: every channel
    (None), or channel ``focus_channel`` alone, as a (1, H, W) view (contiguous: no copy)."""
    if focus_channel is None:
        return lambda image: image
    if not 0 <= focus_channel < channels:
        raise InputError(f"focus channel {focus_channel} does not exist: the frames have {channels} channel(s)")
    return lambda image: image[focus_channel:focus_channel + 1]


@dataclass
class DepthState:
    """Per-pixel depth bookkeeping at full resolution (all float32 (H, W))."""

    best_s: object        # best focus score so far
    prev_s: object        # score of the previous frame
    best_k: object        # index of the best frame so far
    prev_of_best: object  # score of the frame before the best one (-1: none)
    next_of_best: object  # score of the frame after the best one (-1: none yet)
    sum_s: object         # sum of all scores (for the confidence)


class FrameLevels:
    """What every fusion state shares: the frame's Gaussian levels ``g`` (``shapes``, finest first;
    ``g[0]`` is where the next frame is written)."""

    #: the attributes that make up one stack's running state; the others are the frame's scratch
    STACK_FIELDS: tuple = ()

    @property
    def input(self):
        """The (C, H, W) float32 buffer the next frame is converted into (consumed by ``fold``)."""
        return self.g[0]

    def use_input(self, buffer) -> None:
        """Make ``buffer`` (C, H, W) float32, the shape of ``input``, the next ``fold``'s input: the
        pipeline loads the next frame into another buffer while this one is folded."""
        self.g[0] = buffer

    def stack_state(self) -> dict:
        """This fusion's running state (``STACK_FIELDS``), to be put back with ``use_stack_state``:
        several stacks (``stages.channels.PerChannelFusion``: one per channel) share one scratch."""
        return {name: getattr(self, name) for name in self.STACK_FIELDS}

    def use_stack_state(self, saved: dict) -> None:
        for name, value in saved.items():
            setattr(self, name, value)

    def new_stack_state(self) -> dict:
        """A fresh running state of this fusion's shape (as after construction)."""
        raise NotImplementedError

class PyramidFusion(FrameLevels):
    """Running state of the pyramid fusion of frames of shape (C, H, W) on backend ``be``.

    Use: write a frame into ``input`` (planar float32), call ``fold(k)`` with its index in the
    stack; repeat in any order that reaches each frame from a neighbour (``align.processing_order``);
    then ``depth()`` and ``collapse()``. ``focus_channel``: the local energies (selection and depth)
    from that channel alone; every channel takes the coefficients of the same frame. ``maps=False``:
    no depth map nor confidence (the image is the same bytes).
    """

    def __init__(self, be, channels: int, height: int, width: int, *, levels: int, energy_radius: int,
                 depth_radius: int, focus_channel: int | None = None, maps: bool = True):
        self.be = be
        self.maps = maps
        self.channels = channels
        self.focus = focus_view(channels, focus_channel)
        self.shapes = level_shapes(height, width, levels)
        self.levels = levels
        self.radius = energy_radius
        self.depth_radius = depth_radius
        f32 = np.float32
        self.g = [be.empty((channels, h, w), f32) for h, w in self.shapes]
        self._q = be.empty((height * width,), f32)
        self._rowbox = be.empty((height * width,), f32)
        self.use_stack_state(self.new_stack_state())

    STACK_FIELDS = ("best_lap", "best_e", "acc", "tracker", "count")

    def _scratch(self, level):
        """The two flat scratch planes ``_q``, ``_rowbox`` (the finest level's size) at ``level``'s shape."""
        h, w = self.shapes[level]
        return self._q[: h * w].reshape(h, w), self._rowbox[: h * w].reshape(h, w)

    def new_stack_state(self) -> dict:
        be, c, f32 = self.be, self.channels, np.float32
        return {"best_lap": [be.full((c, h, w), 0.0, f32) for h, w in self.shapes[:-1]],
                "best_e": [be.full((h, w), -1.0, f32) for h, w in self.shapes[:-1]],
                "acc": be.full((c,) + self.shapes[-1], 0.0, f32),
                "tracker": DepthTracker(be, *self.shapes[0]) if self.maps else None, "count": 0}

    def fold(self, k: int) -> None:
        """Fold frame ``k`` (shot index), written in ``input``, into the state (``input`` is overwritten)."""
        be, g, last = self.be, self.g, self.levels - 1
        for lv in range(last):
            be.pyramid_reduce(g[lv], g[lv + 1])
        for lv in range(last):
            be.pyramid_expand_sub(g[lv], g[lv + 1])  # g[lv + 1] is still Gaussian here
        for lv in range(last):
            q, rowbox = self._scratch(lv)
            be.fuse_sqsum(self.focus(g[lv]), q)
            be.filter_box_rows(q, rowbox, self.radius)
            be.fuse_select(g[lv], rowbox, self.best_lap[lv], self.best_e[lv], self.radius)
            if lv == 0 and self.maps:  # the depth scores: the same squared sums in a wider window (rowbox is free)
                be.filter_box_rows(q, rowbox, self.depth_radius)
                self.tracker.track(rowbox, self.depth_radius, k)
        be.fuse_accumulate(self.acc, g[last])
        self.count += 1

    def collapse(self, release: bool = True):
        """The fused image, planar float32 (C, H, W), linear light (not clipped).

        Reuses the state's buffers and releases the rest of the state: call once,
        after the last ``fold`` and after ``depth``. ``release=False`` keeps the frame's
        scratch (for another stack's state, ``use_stack_state``).
        """
        be, last = self.be, self.levels - 1
        coarse = self.g[last]
        be.fuse_divide(self.acc, np.float32(self.count), coarse)
        if release:
            self.g[:last] = [None] * last  # the frame pyramid is no longer needed
            self._q = self._rowbox = None
        self.best_e = self.tracker = None
        for lv in range(last - 1, -1, -1):
            be.pyramid_expand_add(self.best_lap[lv], coarse)
            coarse = self.best_lap[lv]
            self.best_lap[lv] = None
        self.best_lap = self.acc = None
        if release:
            self.g = None
        return coarse

    def contrast(self):
        """None: the height map's confidence is the depth map's (``depth``)."""
        return None

    def height_index(self):
        """None: the height map's plane index is the depth map's before smoothing (``depth``)."""
        return None

    def depth(self):
        """(depth, confidence), float32 (H, W): sub-frame index of the sharpest frame, and
        (best - mean score) / best score in [0, 1); (None, None) without ``maps``."""
        return self.tracker.finalize(self.count) if self.maps else (None, None)


class DepthTracker:
    """Per pixel the frame of highest focus score, streaming: its index, the scores of its two
    neighbours in shot order and the sum of all scores (``DepthState``, the ``depth_track``
    kernel), whatever the processing order (``align.processing_order``: from the reference up,
    then down); ``finalize`` gives the sub-frame index of a parabola through the best score and
    its neighbours', and a confidence. Used by the pyramid fusion (its depth map) and by the soft
    fusion (its height map)."""

    def __init__(self, be, height: int, width: int):
        self.be = be
        self.shape = (height, width)
        self._first = self._last = None
        self._first_s = None  # the first frame's scores, kept for the turn of the chain
        f32 = np.float32
        self.state = DepthState(best_s=be.full(self.shape, -1.0, f32), prev_s=be.full(self.shape, -1.0, f32),
                                best_k=be.full(self.shape, 0.0, f32), prev_of_best=be.full(self.shape, -1.0, f32),
                                next_of_best=be.full(self.shape, -1.0, f32), sum_s=be.full(self.shape, 0.0, f32))

    def _neighbour_side(self, k: int) -> int:
        """Which neighbour's score ``state.prev_s`` holds for frame ``k``: 1 (frame k-1),
        -1 (frame k+1), 0 (none). At the turn of the chain (the frame below the first one,
        after the frames above it) the first frame's scores are swapped in."""
        last, first = self._last, self._first
        if last is None:
            return 0
        if last == k - 1:
            return 1
        if last == k + 1:
            return -1
        if first == k + 1 and self._first_s is not None:
            ds = self.state
            ds.prev_s, self._first_s = self._first_s, ds.prev_s
            return -1
        return 0

    def track(self, rowbox, r: int, k: int) -> None:
        """Fold frame ``k``'s scores, the column sums over 2r+1 rows of ``rowbox`` (r = 0: ``rowbox``
        itself), into the state."""
        be = self.be
        be.depth_track(rowbox, self.state, r, k, self._neighbour_side(k))
        if self._last is None and k > 0:  # the chain will come back below this frame
            self._first_s = be.empty(self.shape, np.float32)
            be.copy(self.state.prev_s, self._first_s)
        if self._first is None:
            self._first = k
        self._last = k

    def finalize(self, n: int):
        """(depth, confidence), float32 (H, W): the parabola's sub-frame index, and (best - mean
        score) / best in [0, 1). ``n``: the frames tracked."""
        be, ds = self.be, self.state
        depth = be.empty(self.shape, np.float32)
        conf = be.empty(self.shape, np.float32)
        be.depth_finalize(ds.best_s, ds.best_k, ds.prev_of_best, ds.next_of_best, ds.sum_s, np.float32(n), depth, conf)
        self.state = self._first_s = None
        return depth, conf
