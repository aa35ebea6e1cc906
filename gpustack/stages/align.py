"""Alignment: reference choice, processing order, neighbour chaining, brightness gains, crop.

Frames are processed from the reference outward (``processing_order``): the
reference first, then the frames after it in shot order, then the frames before
it in reverse. Each frame is estimated against the frame processed just before
it (its neighbour in shot order; the frame just below the reference against the
reference itself), and the transform is composed along that chain, so every
frame is warped straight into the reference geometry as soon as it is read: one
pass, memory flat in the number of frames, and the thick stack's extreme frames
never have to match the reference directly (they share little sharp detail).

Transforms are (2, 3) float64 ``affine`` arrays mapping (col, row, 1) of the
reference (the output canvas) to (col, row) in the frame. They are rounded
(translation to 1/1024 px, the linear part to 1e-6) before use, and the gains to
1e-6, so that both backends get the same parameters.

Sub-resolution motion is not applied: a composed transform that moves no corner of
the frame by more than ``SNAP_PROXY_PX`` proxy pixels (``SNAP_PROXY_PX * scale``
full-resolution pixels) is applied as the identity. That is the estimator's
resolution on motionless stacks: blur that varies across the frame (a tilted or
stepped subject going in and out of focus) reads as a few hundredths of a proxy
pixel of apparent magnification per pair, up to 0.19 proxy px at the corners
composed over ten pairs (similarity; 0.28 affine) on the synthetic stacks; a warp
that small would only resample, and soften, the frame, and it would crop the
output by a pixel for nothing. The chain itself composes the unsnapped estimates,
so no motion is lost along it: a frame whose motion grows past the threshold is
warped by all of it.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .estimate import MODELS, PairEstimate, estimate_pair

logger = logging.getLogger(__name__)

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
#: Composed transforms that move no frame corner by more than this many proxy pixels are applied as identity.
SNAP_PROXY_PX = 0.3


def processing_order(n: int, reference: int) -> list[int]:
    """Shot indices in the order they are read and fused: reference, up the stack, then down."""
    return [reference] + list(range(reference + 1, n)) + list(range(reference - 1, -1, -1))


def resolve_reference(reference: int | None, n: int) -> int:
    """The reference index (the middle frame when None); checked against the number of frames."""
    if reference is None:
        return n // 2
    if not 0 <= reference < n:
        raise InputError(f"reference {reference} is out of range for {n} frames; use 0 to {n - 1} "
                         f"(or leave it unset for the middle frame)")
    return reference


def round_affine(a: np.ndarray) -> np.ndarray:
    """Translation to 1/1024 px, linear part to 1e-6: identical parameters on every backend."""
    out = np.array(a, dtype=np.float64)
    out[:, :2] = np.round(out[:, :2] * 1e6) / 1e6
    out[:, 2] = np.round(out[:, 2] * 1024.0) / 1024.0
    return out + 0.0  # no negative zeros


def _h(a):
    return np.vstack([a, [0.0, 0.0, 1.0]])


@dataclass
class FrameAlignment:
    """How one frame is brought into the reference geometry and brightness."""

    index: int
    affine: np.ndarray                     # (2, 3): reference (col, row, 1) -> frame (col, row)
    gains: np.ndarray                      # (C,) float32 per-channel gain
    neighbour: int | None = None           # the frame it was estimated against
    score: float | None = None             # match cost of the accepted estimate
    identity_score: float | None = None    # match cost without a warp
    accepted: bool = True
    seconds: float = 0.0
    estimated: np.ndarray | None = None    # the composed estimate before the identity snap
    snapped: bool = False                  # the estimate was below the estimator's resolution
    model: str | None = None               # the pair estimate's model (affine may fall back to similarity)

    @property
    def is_still(self) -> bool:
        """No geometric change (gains may still apply)."""
        return bool(np.array_equal(self.affine, IDENTITY))

    @property
    def is_identity(self) -> bool:
        return bool(np.array_equal(self.affine, IDENTITY) and np.all(self.gains == 1))

    def to_dict(self) -> dict:
        return {"index": self.index, "affine": self.affine.tolist(), "gains": [float(g) for g in self.gains],
                "neighbour": self.neighbour, "score": self.score, "identity_score": self.identity_score,
                "accepted": self.accepted, "snapped": self.snapped, "model": self.model,
                "estimated": None if self.estimated is None else self.estimated.tolist(),
                "seconds": round(self.seconds, 4)}


@dataclass
class Aligner:
    """The chain along the processing order, in three steps per frame:

    * ``plan`` (in processing order, cheap): which frame it is estimated against, and that
      frame's proxy;
    * ``estimate`` (any thread, any order: a pure function of the two proxies): the pair's motion;
    * ``compose`` (in processing order): the transform to the reference, the snap, the gains.

    The pipeline runs the estimates of several pairs at once on a pool of threads; ``step`` does
    all three for one frame.
    """

    model: str
    reference: int
    brightness: bool
    _last: tuple | None = None          # (index, proxy) of the frame planned last
    _ref: tuple | None = None           # (index, proxy) of the reference (the turn of the chain)
    _chain: dict = field(default_factory=dict)  # index -> composed estimate (before the snap)
    _ref_means: np.ndarray | None = None
    results: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.model not in MODELS:
            raise InputError(f"align must be one of {', '.join(MODELS)}; got {self.model!r}")

    def plan(self, index: int, proxy) -> tuple[int | None, np.ndarray | None]:
        """(index, proxy) of the frame ``index`` is estimated against: the frame planned just before
        it when they are neighbours in shot order, else the reference; (None, None) for the first."""
        if self._last is None:
            nb = (None, None)
            self._ref = (index, proxy)
        else:
            nb = self._last if abs(self._last[0] - index) == 1 else self._ref
        self._last = (index, proxy)
        return nb

    def estimate(self, nb_proxy, proxy, scale: int, offset: float = 0.0) -> PairEstimate | None:
        """The motion of ``proxy`` against ``nb_proxy`` in full-resolution pixels (None without a
        neighbour or with model ``none``). Proxy pixel ``p`` is centred on the frame's
        ``scale * p + offset`` (``offset`` 0.5 for 2x2-binned RAW frames, 0 for pyramid reductions).
        Thread-safe: it reads nothing of the chain."""
        if nb_proxy is None or self.model == "none":
            return None
        return estimate_motion(self.model, nb_proxy, proxy, float(scale), float(offset))

    def compose(self, index: int, neighbour: int | None, est: PairEstimate | None, proxy_shape, scale: int,
                channels: int, measure=None) -> FrameAlignment:
        """Frame ``index``'s alignment from its pair estimate against ``neighbour`` (already composed).

        ``measure(affine)`` returns the frame's (C,) channel means over the reference's central
        region seen through ``affine`` (``proxy.channel_means``); it is called once the transform
        is known, so the gains compare the same part of the subject. None: gains of 1.
        """
        import time

        t0 = time.perf_counter()
        ones = np.ones(channels, np.float32)
        if neighbour is None:
            fa = FrameAlignment(index, IDENTITY.copy(), ones)
            self._chain[index] = fa.affine
        elif est is None:
            fa = FrameAlignment(index, IDENTITY.copy(), ones, neighbour=neighbour)
            self._chain[index] = self._chain[neighbour]
        else:
            chained = round_affine((_h(est.affine) @ _h(self._chain[neighbour]))[:2])
            snapped = _corner_motion(chained, proxy_shape, scale) <= SNAP_PROXY_PX * scale
            fa = FrameAlignment(index, IDENTITY.copy() if snapped else chained, ones, neighbour=neighbour,
                                score=float(est.score), identity_score=float(est.identity_score),
                                accepted=bool(est.accepted), estimated=chained, snapped=bool(snapped),
                                model=est.model)
            self._chain[index] = chained
            if not est.accepted:
                turned_down = _corner_motion(est.rejected, proxy_shape, scale) / scale
                if turned_down > SNAP_PROXY_PX:  # a real motion estimate, not the estimator's residual
                    warnings.warn(f"frame {index}: alignment against frame {neighbour} matched worse than no "
                                  f"warp (the estimate moved a corner {turned_down * scale:.1f} px); kept "
                                  f"unwarped relative to it", stacklevel=2)
                else:
                    logger.debug("frame %d: a sub-resolution estimate against frame %d matched worse than no "
                                 "warp; kept unwarped relative to it", index, neighbour)
        if self.brightness and measure is not None:
            means = np.asarray(measure(fa.estimated if fa.estimated is not None else fa.affine), np.float64)
            if means.shape != (channels,):
                raise ValueError(f"measure returned {means.shape} means for {channels} channel(s)")
            if self._ref_means is None:
                self._ref_means = means
            ratio = np.where(means > 0, self._ref_means / np.maximum(means, 1e-12), 1.0)
            fa.gains = (np.round(ratio * 1e6) / 1e6).astype(np.float32)
        fa.seconds = time.perf_counter() - t0
        self.results[index] = fa
        return fa

    def step(self, index: int, proxy, scale: int, channels: int, measure=None, offset: float = 0.0) -> FrameAlignment:
        """``plan``, ``estimate`` and ``compose`` for frame ``index``, in processing order."""
        import time

        t0 = time.perf_counter()
        neighbour, nb_proxy = self.plan(index, proxy)
        est = self.estimate(nb_proxy, proxy, scale, offset)
        seconds = time.perf_counter() - t0
        fa = self.compose(index, neighbour, est, None if proxy is None else proxy.shape, scale, channels, measure)
        fa.seconds += seconds
        return fa


def estimate_motion(model: str, nb_proxy, proxy, scale: float, offset: float) -> PairEstimate:
    """``estimate_pair`` in the frames' own pixel coordinates."""
    est = estimate_pair(nb_proxy, proxy, model, scale=scale)
    est.affine = _shift_origin(est.affine, offset)
    if est.rejected is not None:
        est.rejected = _shift_origin(est.rejected, offset)
    return est


def _shift_origin(affine, offset: float) -> np.ndarray:
    """``affine`` estimated in coordinates ``X = scale * p`` re-expressed in the frame's own, where
    proxy pixel ``p`` sits at ``scale * p + offset``: ``t' = t + (I - L) (offset, offset)``."""
    a = np.array(affine, dtype=np.float64)
    if offset:
        a[:, 2] += (np.eye(2) - a[:, :2]) @ np.array([offset, offset])
    return a


def _corner_motion(affine, proxy_shape, scale) -> float:
    """The largest distance (full-resolution px, per axis) that ``affine`` moves a corner of the frame
    (of about ``proxy_shape`` times ``scale`` pixels)."""
    h, w = proxy_shape[0] * scale, proxy_shape[1] * scale
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float)
    return float(np.abs(corners @ np.asarray(affine).T - corners[:, :2]).max())


def covered_box(affines, height: int, width: int) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1): the largest axis-aligned canvas box that every frame covers
    (conservative for rotations: each frame's covered parallelogram is replaced by its inner box)."""
    top, left, bottom, right = 0.0, 0.0, float(height - 1), float(width - 1)
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], float)
    for a in affines:
        inv = np.linalg.inv(_h(a))[:2]
        p = corners @ inv.T  # frame corners in canvas coordinates: (x, y)
        (x_tl, y_tl), (x_tr, y_tr), (x_bl, y_bl), (x_br, y_br) = p
        left = max(left, x_tl, x_bl)
        right = min(right, x_tr, x_br)
        top = max(top, y_tl, y_tr)
        bottom = min(bottom, y_bl, y_br)
    r0, c0 = math.ceil(top - 1e-9), math.ceil(left - 1e-9)
    r1, c1 = math.floor(bottom + 1e-9) + 1, math.floor(right + 1e-9) + 1
    if r1 - r0 < 8 or c1 - c0 < 8:
        raise InputError(f"the aligned frames share no usable common area ({c1 - c0}x{r1 - r0} px); "
                         f"check the frame order or use --align none / --no-crop")
    return r0, r1, c0, c1


def coverage_mask(affines, height: int, width: int) -> np.ndarray:
    """bool (H, W): canvas pixels that every frame covers."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    mask = np.ones((height, width), bool)
    for a in affines:
        if np.array_equal(a, IDENTITY):
            continue
        x = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
        y = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
        mask &= (x >= -1e-6) & (x <= width - 1 + 1e-6) & (y >= -1e-6) & (y <= height - 1 + 1e-6)
    return mask
