"""Synthetic focus stacks with a known truth, for honest quality numbers.

A real photograph (one of scikit-image's bundled images) is the all-in-focus
truth. A depth map made of a few objects (a tilted, gently curved background;
discs and rectangles in front of it whose own depth slopes too) says where
each pixel is in focus. Each frame is rendered through a thin-lens model and
gets Poisson-Gaussian sensor noise. Everything is seeded: the same arguments
give the same bytes.

Conventions
-----------
* **Depth** is in frame units: frame ``k`` focuses at depth ``k``; the depth
  map spans ``0 .. n_frames - 1``. **A larger depth is nearer to the camera**:
  where two objects meet, the one with the larger depth occludes the other.
* **Defocus**: a pixel at depth ``d`` is spread in frame ``k`` by an
  anti-aliased disc (pillbox) PSF of radius ``r = blur_per_frame * |d - k|``
  pixels, ``blur_per_frame = max_blur / max(1, (n_frames - 1) / 2)``: a point
  half the stack away from the focus is blurred to ``max_blur`` px, the ends
  of the stack reach twice that. Radii up to 0.5 px are sharp (the disc fits
  in one pixel).
* **Occlusion** is rendered like a lens: each object (its visible pixels,
  premultiplied, and its coverage) is blurred with its own spatially varying
  PSF, then objects are composited back to front with "over" using their
  blurred coverage, and the result is divided by the accumulated coverage. A
  blurred near object spreads over the far one behind it; a blurred far
  object does not leak into a sharp near object.
* Within one object (a smooth surface) the blur is spatially varying: the
  object is blurred at a ladder of radii (0.25 px steps up to 2 px, then
  12.5 % steps) and each output pixel interpolates between the two radii that
  bracket its own radius, so smooth slopes show no steps.
* **Camera motion and focus breathing** (off by default): each frame is
  rendered as above on a canvas larger than the image (the *reference* frame's
  coordinates, in which ``truth``, ``depth``, ``edges`` and ``labels`` stay),
  then resampled (cubic spline) through its own affine transform, and only
  then gets its sensor noise. ``SyntheticStack.transforms[k]`` is a (2, 3)
  float64 array ``A_k`` mapping (col, row, 1) pixel coordinates of the
  REFERENCE frame to (col, row) coordinates in frame k:
  ``frame_k(A_k @ [x, y, 1]) ~ the scene at (x, y)``. Pixel centres are at
  integer coordinates. The reference frame's transform is the identity.
  ``A_k = [m_k R(theta_k) | c + t_k - m_k R(theta_k) c]`` with ``c`` the image
  centre ``((W - 1) / 2, (H - 1) / 2)``, ``R(theta) = [[cos, -sin], [sin,
  cos]]`` acting on (col, row) (rows point down, so a positive ``theta``
  turns the scene clockwise on screen), ``t_k`` the translation in px and
  ``m_k`` the magnification: ``m_k > 1`` means the scene appears larger in
  frame k (its linear part is ``m_k R(theta_k)``; the inverse map, frame ->
  reference, has linear part ``(1 / m_k) R(-theta_k)``).
* **Supersampling** (``supersample=2``, off by default): everything above at
  twice the resolution, then each 2x2 block averaged into one pixel before
  the noise, as a sensor's pixel integrates light over its area; a moved
  frame is then sampled after the move instead of interpolated from pixels
  already sampled. With ``optics`` (a lens blur) this is the camera-like
  configuration the alignment bounds are measured on.

Only :func:`make_stack` and :func:`make_bench_frames` need scikit-image
(for the photographs); it is imported inside them.
"""

from __future__ import annotations

import functools
import math
import numbers
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
from scipy import ndimage

from .errors import InputError
from .metrics import LUMA_WEIGHTS, srgb_decode, srgb_encode

__all__ = [
    "SyntheticStack",
    "make_stack",
    "make_edges",
    "make_bench_frames",
    "list_scenes",
    "list_depths",
    "corner_error",
    "MicroscopyStack",
    "make_microscopy_stack",
]

#: Scene name -> how to load it from ``skimage.data`` (all bundled, no download).
_SCENES = {
    "astronaut": "astronaut",
    "coffee": "coffee",
    "chelsea": "chelsea",
    "rocket": "rocket",
    "camera": "camera",
    "immunohistochemistry": "immunohistochemistry",
    "hubble_deep_field": "hubble_deep_field",
    "retina": "retina",
    "motorcycle": "stereo_motorcycle",
    "brick": "brick",
    "grass": "grass",
    "gravel": "gravel",
    "moon": "moon",
    "coins": "coins",
}

#: Depth map name -> what it is.
_DEPTHS = {
    "slope": "one smooth tilted plane with gentle curvature over the whole range, no occlusion",
    "steps": "four flat layers (background, rectangle, disc, small rectangle) with sharp occlusion edges",
    "mixed": "tilted curved background plane plus a disc and a rotated rectangle in front, each sloped",
    "dome": "one smooth paraboloid, nearest in the middle, no occlusion",
}

#: Default sensor: electrons at full scale, and read noise (fraction of full scale).
DEFAULT_GAIN = 4000.0
DEFAULT_READ_NOISE = 0.001


def list_scenes() -> list[str]:
    """Names accepted by ``make_stack(scene=...)``."""
    return list(_SCENES)


def list_depths() -> list[str]:
    """Names accepted by ``make_stack(depth=...)``."""
    return list(_DEPTHS)


# ---------------------------------------------------------------- the result


def _encode(frames, maxval, dtype):
    return [np.rint(srgb_encode(f).astype(np.float64) * maxval).astype(dtype) for f in frames]


@dataclass
class SyntheticStack:
    """A rendered focus stack and its ground truth.

    Attributes
    ----------
    frames : list of (H, W, C) float32 ndarray
        Linear light in [0, 1], frame ``k`` focused at depth ``k``.
    truth : (H, W, C) float32 ndarray
        The all-in-focus image (linear).
    depth : (H, W) float32 ndarray
        True focus position in frame units (0 .. n_frames - 1); larger is nearer.
    edges : (H, W) bool ndarray
        Within ``band`` px of a depth discontinuity (occlusion edge).
    params : dict
        Every argument, plus the derived numbers (``blur_per_frame``, ``jump``,
        the objects and their depth ranges, generation time).
    labels : (H, W) int16 ndarray
        Which object each pixel shows; objects are numbered back (0) to front.
    transforms : list of (2, 3) float64 ndarray
        ``A_k`` maps (col, row, 1) pixel coordinates of the REFERENCE frame
        (the coordinates of ``truth``, ``depth``, ``edges``, ``labels``) to
        (col, row) coordinates in frame k: ``frame_k(A_k @ [x, y, 1]) ~ the
        scene at (x, y)``. Pixel centres are at integer coordinates. The
        reference frame's transform is the identity (all are without motion).
    reference : int
        Index of the reference frame.
    """

    frames: list
    truth: np.ndarray
    depth: np.ndarray
    edges: np.ndarray
    params: dict
    labels: np.ndarray = field(default=None, repr=False)
    transforms: list = field(default=None, repr=False)
    reference: int = 0

    def as_uint16(self) -> list[np.ndarray]:
        """Frames sRGB-encoded (exact curve) and rounded to uint16, for 16-bit TIFFs."""
        return _encode(self.frames, 65535.0, np.uint16)

    def as_uint8(self) -> list[np.ndarray]:
        """Frames sRGB-encoded (exact curve) and rounded to uint8."""
        return _encode(self.frames, 255.0, np.uint8)


# ---------------------------------------------------------------- scenes


def _to_channels(img, channels):
    """(H, W, c) -> (H, W, channels): gray repeated, or RGB to luminance."""
    if img.shape[2] == channels:
        return img
    if channels == 3 and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if channels == 1 and img.shape[2] >= 3:
        return (img[..., :3] @ np.asarray(LUMA_WEIGHTS, dtype=img.dtype))[..., None]
    raise InputError(f"cannot turn a {img.shape[2]}-channel image into {channels} channels")


def _cover(img, shape):
    """Resize (anti-aliased, in linear light) to cover ``shape``, then centre-crop."""
    from skimage.transform import resize

    h0, w0 = img.shape[:2]
    h, w = shape
    scale = max(h / h0, w / w0)
    size = (max(h, round(h0 * scale)), max(w, round(w0 * scale)))
    if size != (h0, w0):
        img = resize(img, size + img.shape[2:], order=1, anti_aliasing=scale < 1, mode="reflect")
    r0 = (img.shape[0] - h) // 2
    c0 = (img.shape[1] - w) // 2
    return np.clip(img[r0 : r0 + h, c0 : c0 + w], 0.0, 1.0)


@functools.lru_cache(maxsize=16)
def _load_scene(name, shape, channels):
    """Linear float32 (H, W, channels) version of a bundled photograph (read-only, cached)."""
    import skimage.data

    if name not in _SCENES:
        raise InputError(f"unknown scene {name!r}; choose one of {', '.join(_SCENES)} or pass an (H, W, C) array")
    img = getattr(skimage.data, _SCENES[name])()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    if img.ndim == 2:
        img = img[..., None]
    lin = srgb_decode(img[..., :3].astype(np.float64) / 255.0).astype(np.float64)
    out = _to_channels(_cover(lin, shape), channels).astype(np.float32)
    out.setflags(write=False)
    return out


def _scene_array(scene, shape, channels):
    if isinstance(scene, str):
        return _load_scene(scene, tuple(shape), channels), scene
    arr = np.asarray(scene, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise InputError(f"scene array must be (H, W), (H, W, 1) or (H, W, 3) linear float, got {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise InputError("scene array must be linear light in [0, 1]; clip it or decode it with srgb_decode first")
    return arr, "array"


# ---------------------------------------------------------------- depth maps


@dataclass
class _Object:
    kind: str
    mask: np.ndarray  # (Hp, Wp) bool: where the object is (before occlusion by nearer ones)
    depth: np.ndarray  # (Hp, Wp) float32: its depth, defined everywhere (extrapolated)
    info: dict


def _ramp(a, b, angle, region=None):
    """A linear ramp along ``angle`` over the grids (a, b), scaled to [0, 1] over ``region`` (bool) or the grids."""
    t = a * math.cos(angle) + b * math.sin(angle)
    sel = t if region is None else t[region]
    lo, hi = float(sel.min()), float(sel.max())
    return (t - lo) / max(hi - lo, 1e-9)


def _curved_plane(a, b, inside, rng, lo, hi):
    """Tilted plane with gentle curvature spanning [lo, hi] over the image (``inside``)."""
    t = _ramp(a, b, rng.uniform(0, 2 * math.pi), inside)
    kappa = rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.4)
    t = t + kappa * t * (1.0 - t)  # monotonic on [0, 1] since |kappa| < 1
    return lo + (hi - lo) * t, {"curvature": float(kappa)}


def _disc(a, b, ca, cb, radius):
    return (a - ca) ** 2 + (b - cb) ** 2 <= radius**2


def _rect(a, b, ca, cb, half_a, half_b, angle):
    c, s = math.cos(angle), math.sin(angle)
    u = (a - ca) * c + (b - cb) * s
    v = -(a - ca) * s + (b - cb) * c
    return (np.abs(u) <= half_a) & (np.abs(v) <= half_b)


def _objects_slope(a, b, inside, la, lb, top, rng, core):
    d, info = _curved_plane(a, b, inside, rng, 0.0, top)
    return [_Object("plane", np.ones(a.shape, bool), d, info)]


def _objects_dome(a, b, inside, la, lb, top, rng, core):
    ca = la * rng.uniform(0.4, 0.6)
    cb = lb * rng.uniform(0.4, 0.6)
    rho2 = (a - ca) ** 2 + (b - cb) ** 2
    d = top * (1.0 - rho2 / rho2[inside].max())
    return [_Object("dome", np.ones(a.shape, bool), d, {"centre": [float(ca), float(cb)]})]


def _objects_mixed(a, b, inside, la, lb, top, rng, core):
    back, info = _curved_plane(a, b, inside, rng, 0.0, 0.45 * top)
    objs = [_Object("plane", np.ones(a.shape, bool), back, info)]
    side = rng.choice([-1.0, 1.0])  # disc on the low or high end of the long axis
    short = min(la, lb)
    for _ in range(50):
        radius = short * rng.uniform(0.18, 0.26)
        dc = (la * (0.5 - side * rng.uniform(0.2, 0.3)), lb * rng.uniform(0.35, 0.65))
        rc = (la * (0.5 + side * rng.uniform(0.2, 0.3)), lb * rng.uniform(0.35, 0.65))
        half = (la * rng.uniform(0.08, 0.14), lb * rng.uniform(0.15, 0.25))
        angle = rng.uniform(-0.45, 0.45)
        disc = _disc(a, b, *dc, radius)
        rect = _rect(a, b, *rc, *half, angle)
        # Checked on the grid without the motion margin, so motion does not move the layout.
        gap = ndimage.binary_dilation(disc[core], iterations=3) & rect[core]
        if not gap.any():
            break
    else:  # pragma: no cover - the ranges above leave room on any sane shape
        raise InputError(f"could not place two separate objects on a {la:.0f}x{lb:.0f} image; make it larger")
    for kind, mask, lo, hi in (("disc", disc, 0.62, 1.0), ("rectangle", rect, 0.6, 0.92)):
        t = _ramp(a, b, rng.uniform(0, 2 * math.pi), mask & inside if (mask & inside).any() else mask)
        objs.append(_Object(kind, mask, top * (lo + (hi - lo) * t), {}))
    return objs


def _objects_steps(a, b, inside, la, lb, top, rng, core):
    levels = np.sort(np.array([0.05, 0.35, 0.65, 0.95]) + rng.uniform(-0.04, 0.04, 4)) * top
    side = rng.choice([-1.0, 1.0])
    big = _rect(a, b, la * (0.5 + side * 0.25), lb * 0.5, la * 0.3, lb * 0.7, rng.uniform(-0.3, 0.3))
    disc = _disc(a, b, la * (0.5 + side * rng.uniform(0.0, 0.1)), lb * rng.uniform(0.4, 0.6), min(la, lb) * 0.25)
    small = _rect(
        a, b, la * (0.5 - side * 0.28), lb * rng.uniform(0.3, 0.7), la * 0.08, lb * 0.12, rng.uniform(-0.5, 0.5)
    )
    masks = [np.ones(a.shape, bool), big, disc, small]
    kinds = ["plane", "rectangle", "disc", "rectangle"]
    return [
        _Object(kind, m, np.full(a.shape, lev, np.float32), {}) for kind, m, lev in zip(kinds, masks, levels)
    ]


_DEPTH_MAKERS = {
    "slope": _objects_slope,
    "steps": _objects_steps,
    "mixed": _objects_mixed,
    "dome": _objects_dome,
}


def _make_objects(depth, shape, pad, n_frames, rng, margin=0):
    """Objects (back to front) on the padded grid, the padded label map and the padded depth map.

    The grid extends ``pad + margin`` px beyond the image on every side; the
    layout only depends on the image and ``pad`` (not on ``margin``).
    """
    if depth not in _DEPTH_MAKERS:
        raise InputError(f"unknown depth map {depth!r}; choose one of {', '.join(_DEPTHS)}")
    h, w = shape
    full = pad + margin
    rows, cols = np.mgrid[-full : h + full, -full : w + full].astype(np.float64)
    core = (slice(margin, margin + h + 2 * pad), slice(margin, margin + w + 2 * pad))
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    # Lay shapes out along the long axis, whichever it is.
    a, b, la, lb = (cols, rows, w, h) if w >= h else (rows, cols, h, w)
    top = float(n_frames - 1)
    objs = _DEPTH_MAKERS[depth](a, b, inside, la, lb, top, rng, core)
    labels = np.zeros(rows.shape, np.int16)
    for i, obj in enumerate(objs):
        obj.depth = np.clip(obj.depth, 0.0, top).astype(np.float32)
        labels[obj.mask] = i
    dmap = np.zeros(rows.shape, np.float32)
    for i, obj in enumerate(objs):
        sel = labels == i
        dmap[sel] = obj.depth[sel]
    return objs, labels, dmap


def _label_jump(labels, depth):
    """Smallest depth difference across a boundary between two labels (inf when there is none)."""
    jumps = []
    for axis in (0, 1):
        la = np.moveaxis(labels, axis, 0)
        da = np.moveaxis(depth, axis, 0)
        cross = la[1:] != la[:-1]
        if cross.any():
            jumps.append(np.abs(da[1:] - da[:-1])[cross].min())
    return float(min(jumps)) if jumps else math.inf


def make_edges(depth, band=10, *, jump=0.5):
    """Pixels within ``band`` px (Euclidean) of a depth discontinuity.

    A discontinuity is a pair of 4-neighbours whose depths differ by more
    than ``jump`` frames; both pixels of the pair count as the edge.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise InputError(f"depth must be (H, W), got shape {depth.shape}")
    edge = np.zeros(depth.shape, bool)
    dv = np.abs(np.diff(depth, axis=0)) > jump
    dh = np.abs(np.diff(depth, axis=1)) > jump
    edge[1:] |= dv
    edge[:-1] |= dv
    edge[:, 1:] |= dh
    edge[:, :-1] |= dh
    if not edge.any():
        return edge
    return ndimage.distance_transform_edt(~edge) <= band


# ---------------------------------------------------------------- defocus


def _radius_ladder(rmax):
    """Radii at which each object is blurred: 0.5 (sharp), 0.25-px steps to 2, then 12.5 % steps."""
    radii = [0.5]
    while radii[-1] < rmax - 1e-9:
        r = radii[-1]
        radii.append(r + 0.25 if r < 2.0 - 1e-9 else r * 1.125)
    return np.asarray(radii)


def _disc_kernel(radius, half):
    """Anti-aliased pillbox of ``radius`` px on a (2 half + 1)^2 grid, sum 1 (float64)."""
    rr = np.hypot(*np.mgrid[-half : half + 1, -half : half + 1])
    k = np.clip(radius + 0.5 - rr, 0.0, 1.0)
    return k / k.sum()


@functools.lru_cache(maxsize=256)
def _disc_otf(radius, half, fft_shape):
    """rfft2 of the pillbox, placed so that a 'full' linear convolution starts at index 0."""
    pad = np.zeros(fft_shape, np.float32)
    pad[: 2 * half + 1, : 2 * half + 1] = _disc_kernel(radius, half)
    return scipy.fft.rfft2(pad)


def _blur_ladder(planes, radii, half, crop):
    """Blur (P, h, w) planes at every radius; keep ``crop`` (row slice, col slice) of the 'full' convolution.

    The 'full' output has (h + 2 half, w + 2 half) pixels, offset by ``-half``
    from the input. Returns (P, L, rows, cols) float32.
    """
    p, h, w = planes.shape
    rows, cols = crop
    out = np.empty((p, len(radii), rows.stop - rows.start, cols.stop - cols.start), np.float32)
    fft_shape = (scipy.fft.next_fast_len(h + 2 * half, real=True), scipy.fft.next_fast_len(w + 2 * half, real=True))
    spec = None
    for i, r in enumerate(radii):
        if r <= 0.5:  # the disc fits in one pixel: exactly sharp
            full = np.zeros((p, h + 2 * half, w + 2 * half), np.float32)
            full[:, half : half + h, half : half + w] = planes
        else:
            if spec is None:
                spec = scipy.fft.rfft2(planes, s=fft_shape, workers=-1)
            full = scipy.fft.irfft2(spec * _disc_otf(float(r), half, fft_shape), s=fft_shape, workers=-1)
        out[:, i] = full[:, rows, cols]
    return out


def _render(truth_p, labels_p, objs, n_frames, blur_per_frame, pad):
    """Render every frame (H, W, C) float32 from the padded truth and the objects."""
    hp, wp, ch = truth_p.shape
    h, w = hp - 2 * pad, wp - 2 * pad
    radii_all = _radius_ladder(blur_per_frame * (n_frames - 1))
    prepared = []
    for i, obj in enumerate(objs):
        vis = labels_p == i
        if not vis.any():
            continue
        rs, cs = np.nonzero(vis.any(axis=1))[0], np.nonzero(vis.any(axis=0))[0]
        r0, r1, c0, c1 = rs[0], rs[-1] + 1, cs[0], cs[-1] + 1
        dlo, dhi = float(obj.depth[r0:r1, c0:c1][vis[r0:r1, c0:c1]].min()), float(obj.depth[r0:r1, c0:c1].max())
        rneed = blur_per_frame * max(dhi, (n_frames - 1) - dlo)
        radii = radii_all[: max(2, int(np.searchsorted(radii_all, rneed - 1e-9)) + 1)]
        half = int(math.ceil(radii[-1] + 0.5))
        # The full convolution covers rows r0 - half .. r1 + half (padded coordinates); keep the image part.
        fr0, fr1 = max(r0 - half, pad), min(r1 + half, pad + h)
        fc0, fc1 = max(c0 - half, pad), min(c1 + half, pad + w)
        if fr0 >= fr1 or fc0 >= fc1:
            continue
        planes = np.empty((ch + 1, r1 - r0, c1 - c0), np.float32)
        m = vis[r0:r1, c0:c1]
        planes[:ch] = np.moveaxis(truth_p[r0:r1, c0:c1], 2, 0) * m
        planes[ch] = m
        crop = (slice(fr0 - r0 + half, fr1 - r0 + half), slice(fc0 - c0 + half, fc1 - c0 + half))
        ladder = _blur_ladder(planes, radii, half, crop)
        prepared.append(
            (
                (slice(fr0 - pad, fr1 - pad), slice(fc0 - pad, fc1 - pad)),
                obj.depth[fr0:fr1, fc0:fc1].ravel(),
                radii,
                # (planes, radii * pixels): one flat gather per plane picks each pixel's radius.
                ladder.reshape(ch + 1, -1),
            )
        )
    frames = []
    for k in range(n_frames):
        acc = np.zeros((ch + 1, h, w), np.float32)
        for sl, dep, radii, ladder in prepared:
            n_pix = dep.size
            radius = blur_per_frame * np.abs(dep - np.float32(k))
            t = np.interp(radius, radii, np.arange(len(radii), dtype=np.float64))
            if len(radii) == 1:
                val = ladder
            else:
                i0 = np.minimum(t.astype(np.intp), len(radii) - 2)
                f = (t - i0).astype(np.float32)
                idx = i0 * n_pix + np.arange(n_pix)
                lo = np.empty((ch + 1, n_pix), np.float32)
                val = np.empty((ch + 1, n_pix), np.float32)
                for c in range(ch + 1):
                    ladder[c].take(idx, out=lo[c])
                    ladder[c].take(idx + n_pix, out=val[c])
                val -= lo  # val = lo + f (hi - lo)
                val *= f
                val += lo
            val = val.reshape(ch + 1, sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
            region = acc[:, sl[0], sl[1]]
            region *= 1.0 - val[ch]
            region += val
        cover = np.maximum(acc[ch], 1e-12)
        frames.append(np.ascontiguousarray(np.moveaxis(acc[:ch] / cover, 0, 2)))
    return frames


# ---------------------------------------------------------------- motion

#: Spline order of the motion resampling.
_WARP_ORDER = 3


def _as_affine3(a):
    """(2, 3) or (3, 3) affine -> (3, 3) float64."""
    a = np.asarray(a, dtype=np.float64)
    if a.shape not in ((2, 3), (3, 3)):
        raise InputError(f"an affine transform must be a (2, 3) or (3, 3) array, got shape {a.shape}")
    return np.vstack([a[:2], [0.0, 0.0, 1.0]])


def _is_number(x):
    """A finite real number (not a bool)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _motion_transforms(n_frames, shape, breathing, shift, rotation, reference, rng):
    """Per-frame (2, 3) transforms ``A_k`` (reference (col, row) -> frame k (col, row))."""
    h, w = shape
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    # Always drawn together, so the shifts stay put when the rotation is switched on or off (and vice versa).
    u = rng.uniform(-1.0, 1.0, (n_frames, 3))
    out = []
    for k in range(n_frames):
        a = np.eye(2, 3)
        if k != reference:
            m = 1.0 + breathing * (k - reference) / (n_frames - 1)
            theta = math.radians(rotation * u[k, 2])
            lin = m * np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
            a[:, :2] = lin
            a[:, 2] = centre + shift * u[k, :2] - lin @ centre
        out.append(a)
    return out


def _motion_margin(transforms, shape):
    """Px the canvas must extend beyond the reference frame so that every frame sees rendered pixels only."""
    h, w = shape
    corners = np.array([[0.0, w - 1.0, 0.0, w - 1.0], [0.0, 0.0, h - 1.0, h - 1.0], [1.0, 1.0, 1.0, 1.0]])
    over = 0.0
    for a in transforms:
        src = np.linalg.inv(_as_affine3(a))[:2] @ corners  # frame corners in reference coordinates
        over = max(over, float((-src).max()), float(src[0].max()) - (w - 1), float(src[1].max()) - (h - 1))
    return int(math.ceil(over)) + _WARP_ORDER + 1  # + the spline's support, so no sample reflects off the canvas


def _warp(canvas, a, margin, shape):
    """Frame (H, W, C) seen through ``a`` (reference -> frame) from a canvas ``margin`` px larger on every side."""
    h, w = shape
    if np.array_equal(a, np.eye(2, 3)):
        return np.ascontiguousarray(canvas[margin : margin + h, margin : margin + w])
    b = np.linalg.inv(_as_affine3(a))  # frame (col, row) -> reference (col, row)
    # ndimage works in (row, col) order and in canvas indices.
    matrix = np.array([[b[1, 1], b[1, 0]], [b[0, 1], b[0, 0]]])
    offset = np.array([b[1, 2] + margin, b[0, 2] + margin])
    out = np.empty((canvas.shape[2], h, w), np.float32)
    for c in range(canvas.shape[2]):
        ndimage.affine_transform(
            canvas[..., c], matrix, offset, output_shape=(h, w), output=out[c], order=_WARP_ORDER, mode="reflect"
        )
    return np.ascontiguousarray(np.moveaxis(out, 0, 2))


def corner_error(est_transforms, true_transforms, shape) -> float:
    """RMS distance in px between where two sets of transforms put the image corners.

    Each transform is a (2, 3) (or (3, 3)) affine in the convention of
    :attr:`SyntheticStack.transforms`: reference (col, row, 1) -> frame k
    (col, row). The four corners are the corner pixels' centres
    ``(0, 0), (W - 1, 0), (0, H - 1), (W - 1, H - 1)`` of an image of
    ``shape`` ``(H, W[, C])``. The RMS is over every corner of every frame.
    """
    est, true = list(est_transforms), list(true_transforms)
    if len(est) != len(true) or not true:
        raise InputError(f"need the same non-zero number of transforms, got {len(est)} and {len(true)}")
    h, w = int(shape[0]), int(shape[1])
    corners = np.array([[0.0, w - 1.0, 0.0, w - 1.0], [0.0, 0.0, h - 1.0, h - 1.0], [1.0, 1.0, 1.0, 1.0]])
    sq = [np.sum(((_as_affine3(e) - _as_affine3(t))[:2] @ corners) ** 2, axis=0) for e, t in zip(est, true)]
    return float(np.sqrt(np.mean(np.concatenate(sq))))


# ---------------------------------------------------------------- noise


def _add_noise(x, gain, read_noise, rng):
    """Poisson-Gaussian noise in linear light, clipped to [0, 1].

    ``poisson(x gain) / gain + N(0, read_noise^2)``. Where the mean count
    ``x gain`` is at least 64 electrons, the sum is drawn as one normal with
    the same mean and variance ``x / gain + read_noise^2`` (the Poisson law is
    within a few per cent of normal there, and this is several times faster);
    below that the photon count is an exact Poisson draw.
    """
    x = np.clip(x, 0.0, 1.0).astype(np.float32)
    z = rng.standard_normal(x.shape, dtype=np.float32)
    sd = x / np.float32(gain)
    sd += np.float32(read_noise) ** 2
    np.sqrt(sd, out=sd)
    y = z * sd
    y += x
    low = np.nonzero(x.ravel() < np.float32(64.0 / gain))[0]
    if low.size:
        counts = rng.poisson(x.ravel()[low].astype(np.float64) * gain)
        y.ravel()[low] = counts / np.float32(gain) + np.float32(read_noise) * z.ravel()[low]
    return np.clip(y, 0.0, 1.0, out=y)


# ---------------------------------------------------------------- public


def make_stack(
    *,
    scene="astronaut",
    depth="mixed",
    n_frames=12,
    shape=(384, 512),
    channels=3,
    max_blur=6.0,
    noise=True,
    gain=DEFAULT_GAIN,
    read_noise=DEFAULT_READ_NOISE,
    seed=0,
    band=10,
    breathing=0.0,
    shift=0.0,
    rotation=0.0,
    reference=None,
    optics=0.0,
    supersample=1,
) -> SyntheticStack:
    """Render a synthetic focus stack with its ground truth.

    Parameters
    ----------
    scene : str or (H, W[, C]) ndarray
        A name from :func:`list_scenes` (resized and centre-cropped to
        ``shape``, converted to linear light), or a linear float image in
        [0, 1] (then ``shape`` and ``channels`` come from the array).
    depth : str
        A name from :func:`list_depths`. Larger depth is nearer.
    n_frames : int
        Frames in the stack (>= 2); frame ``k`` focuses at depth ``k``.
    shape : (H, W)
        Frame size for a named scene.
    channels : {3, 1}
        Channels for a named scene (gray scenes are repeated, colour ones
        turned to luminance).
    max_blur : float
        Blur radius in px of a point half the stack (``(n_frames - 1) / 2``
        frames) away from focus; the radius grows linearly with ``|d - k|``.
    noise : bool
        Add Poisson-Gaussian sensor noise.
    gain : float
        Electrons at full scale (1.0): photon noise variance is ``x / gain``.
    read_noise : float
        Standard deviation of the Gaussian read noise, in full-scale units.
    seed : int
        Seeds the depth map layout, the noise and the motion (separate
        streams: switching motion on leaves the layout unchanged and the
        noise is drawn from the same stream).
    band : int
        Half-width in px of the ``edges`` mask.
    breathing : float
        Focus breathing: the total relative magnification change across the
        stack (0.02 = 2 %). Frame ``k`` is magnified about the image centre by
        ``m_k = 1 + breathing * (k - reference) / (n_frames - 1)``; in (-1, 1).
    shift : float
        Camera shake: the largest per-frame translation in px, each frame's
        drawn uniformly in ``[-shift, shift]`` per axis (the reference's is 0).
    rotation : float
        The largest per-frame rotation in degrees, each frame's drawn
        uniformly in ``[-rotation, rotation]`` (the reference's is 0); <= 45.
    reference : int or None
        Index of the reference frame, whose pixel grid the ``truth``,
        ``depth``, ``edges`` and ``labels`` share; None is ``n_frames // 2``.
    optics : float
        Gaussian sigma in px of the in-focus optics (lens and anti-aliasing
        filter), applied to the scene first, so the ``truth`` has it too. A
        real camera never records detail at the pixel's Nyquist frequency at
        full contrast (and a Bayer sensor could not resolve it in colour); a
        resized photograph (0, the default) does, which no demosaic and no
        sub-pixel resampling can keep. About 0.7-1 px is camera-like.
    supersample : int
        Render at ``supersample`` times the resolution (scene, blur, optics,
        shifts and margins scaled alike), then average each ``supersample``
        x ``supersample`` block into one pixel, as a sensor integrates light
        over its pixel, before the noise. With motion, a frame is then
        resampled on the fine grid and only then sampled, like a camera
        that moved, instead of resampled from pixels that were already
        sampled (which loses the detail near the pixel Nyquist frequency
        that any interpolation at a sub-pixel offset loses, and which a
        moving camera keeps). ``truth``, ``depth`` and ``transforms`` are on
        the output grid; ``labels`` are the centre samples of the blocks.
        1 (the default) renders at the output resolution.

    With motion, each frame is rendered on a canvas large enough for every
    frame's field of view (no empty corners), resampled by a cubic spline
    through its transform (see :attr:`SyntheticStack.transforms`: ``A_k``
    maps (col, row, 1) pixel coordinates of the REFERENCE frame to (col, row)
    coordinates in frame k, ``frame_k(A_k @ [x, y, 1]) ~ the scene at (x,
    y)``; pixel centres are at integer coordinates; the reference frame's
    transform is the identity), and then gets its noise. Defocus is computed
    in reference coordinates (breathing does not rescale the blur). Without
    motion (the default) the output is exactly that of the motion-free
    generator.

    Returns
    -------
    SyntheticStack
    """
    t_start = time.perf_counter()
    if isinstance(supersample, bool) or not isinstance(supersample, numbers.Integral) or not 1 <= supersample <= 4:
        raise InputError(f"supersample must be an integer from 1 to 4, got {supersample!r}")
    supersample = int(supersample)
    if int(n_frames) != n_frames or n_frames < 2:
        raise InputError(f"n_frames must be an integer >= 2, got {n_frames}")
    n_frames = int(n_frames)
    if channels not in (1, 3):
        raise InputError(f"channels must be 1 or 3, got {channels}")
    if max_blur < 0 or not math.isfinite(max_blur):
        raise InputError(f"max_blur must be a finite number >= 0, got {max_blur}")
    if noise and (gain <= 0 or read_noise < 0):
        raise InputError(f"gain must be > 0 and read_noise >= 0, got gain={gain}, read_noise={read_noise}")
    if not (_is_number(breathing) and -1.0 < breathing < 1.0):
        raise InputError(f"breathing must be a number in (-1, 1), got {breathing!r}")
    if not (_is_number(shift) and shift >= 0):
        raise InputError(f"shift must be a finite number >= 0 (px), got {shift!r}")
    if not (_is_number(rotation) and 0 <= rotation <= 45):
        raise InputError(f"rotation must be a number in [0, 45] (degrees), got {rotation!r}")
    if reference is None:
        reference = n_frames // 2
    if isinstance(reference, bool) or not isinstance(reference, numbers.Integral) or not 0 <= reference < n_frames:
        raise InputError(f"reference must be a frame index in 0 .. {n_frames - 1} or None, got {reference!r}")
    reference = int(reference)
    if isinstance(scene, str):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2 or min(shape) < 16:
            raise InputError(f"shape must be (H, W) with both >= 16, got {shape}")
    if not (_is_number(optics) and 0 <= optics * supersample <= 8):
        fine = f" with supersample={supersample} (8 px on the fine grid)" if supersample > 1 else ""
        raise InputError(f"optics must be a Gaussian sigma from 0 to {8 / supersample:g} px{fine}, got {optics!r}")
    if supersample > 1:  # every argument checked above, against the values given
        return _supersampled(supersample, scene=scene, depth=depth, n_frames=n_frames, shape=shape,
                             channels=channels, max_blur=max_blur, noise=noise, gain=gain, read_noise=read_noise,
                             seed=seed, band=band, breathing=breathing, shift=shift, rotation=rotation,
                             reference=reference, optics=optics)
    truth, scene_name = _scene_array(scene, shape, channels)
    if optics > 0:
        truth = ndimage.gaussian_filter(truth, (float(optics), float(optics), 0), mode="reflect").astype(np.float32)
    h, w, ch = truth.shape
    if min(h, w) < 16:
        raise InputError(f"scene must be at least 16x16, got {h}x{w}")

    # spawn(3)[:2] == spawn(2): the layout and noise streams are those of the motion-free generator.
    geo_seed, noise_seed, motion_seed = np.random.SeedSequence(seed).spawn(3)
    blur_per_frame = float(max_blur) / max(1.0, (n_frames - 1) / 2.0)
    rmax = blur_per_frame * (n_frames - 1)
    pad = int(math.ceil(rmax + 0.5)) + 1

    moving = breathing != 0 or shift != 0 or rotation != 0
    if moving:
        motion_rng = np.random.default_rng(motion_seed)
        transforms = _motion_transforms(n_frames, (h, w), breathing, shift, rotation, reference, motion_rng)
        margin = _motion_margin(transforms, (h, w))
    else:
        transforms = [np.eye(2, 3) for _ in range(n_frames)]
        margin = 0
    full = pad + margin  # the grid: the canvas (image + margin) plus the blur's reach

    objs, labels_p, depth_p = _make_objects(depth, (h, w), pad, n_frames, np.random.default_rng(geo_seed), margin)
    truth_p = np.pad(truth, ((full, full), (full, full), (0, 0)), mode="symmetric")
    frames = _render(truth_p, labels_p, objs, n_frames, blur_per_frame, pad)  # on the canvas
    if moving:
        frames = [_warp(f, a, margin, (h, w)) for f, a in zip(frames, transforms)]

    if noise:
        rng = np.random.default_rng(noise_seed)
        frames = [_add_noise(f, gain, read_noise, rng) for f in frames]
    else:
        frames = [np.clip(f, 0.0, 1.0) for f in frames]

    inner = (slice(full, full + h), slice(full, full + w))
    labels = labels_p[inner].copy()
    depth_map = depth_p[inner].copy()
    # Half the smallest step across an object boundary (at most 0.5 frame) separates edges from slopes.
    jump = 0.5 * min(_label_jump(labels, depth_map), 1.0)
    edges = make_edges(depth_map, band, jump=jump) if len(objs) > 1 else np.zeros((h, w), bool)
    params = {
        "scene": scene_name,
        "depth": depth,
        "n_frames": n_frames,
        "shape": (h, w),
        "channels": ch,
        "max_blur": float(max_blur),
        "blur_per_frame": blur_per_frame,
        "psf": "anti-aliased disc, radius = blur_per_frame * |depth - k| px",
        "near": "larger depth is nearer (occludes)",
        "noise": bool(noise),
        "gain": float(gain),
        "read_noise": float(read_noise),
        "seed": seed,
        "band": band,
        "jump": jump,
        "breathing": float(breathing),
        "shift": float(shift),
        "rotation": float(rotation),
        "reference": reference,
        "margin": margin,
        "motion": "transforms[k]: reference (col, row, 1) -> frame k (col, row); m > 1 = scene larger in frame k",
        "objects": [
            {
                "kind": o.kind,
                "label": i,
                "depth_range": (float(o.depth[inner][labels == i].min()), float(o.depth[inner][labels == i].max()))
                if (labels == i).any()
                else None,
                **o.info,
            }
            for i, o in enumerate(objs)
        ],
        "generation_seconds": time.perf_counter() - t_start,
    }
    return SyntheticStack(
        frames=frames,
        truth=np.array(truth, dtype=np.float32),
        depth=depth_map,
        edges=edges,
        params=params,
        labels=labels,
        transforms=transforms,
        reference=reference,
    )


def _block_mean(a, s):
    """(H*s, W*s[, C]) -> (H, W[, C]): the mean of each s x s block."""
    h, w = a.shape[0] // s, a.shape[1] // s
    return a[: h * s, : w * s].reshape(h, s, w, s, *a.shape[2:]).mean(axis=(1, 3)).astype(np.float32)


def _supersampled(s, *, scene, shape, max_blur, noise, gain, read_noise, seed, band, shift, optics, **kw):
    """``make_stack(supersample=s)`` (arguments already checked there): the stack rendered
    noise-free at s times the resolution, block-averaged, then given its noise (the stream the
    output-resolution generator uses)."""
    t_start = time.perf_counter()
    if isinstance(scene, str):
        fine_scene, out_shape = scene, shape
    else:
        arr = np.asarray(scene, dtype=np.float32)
        out_shape = arr.shape[:2]
        zoom = (s, s) + (1,) * (arr.ndim - 2)
        fine_scene = np.clip(ndimage.zoom(arr, zoom, order=3, mode="reflect", grid_mode=True), 0, 1)
    fine = make_stack(scene=fine_scene, shape=(out_shape[0] * s, out_shape[1] * s), max_blur=max_blur * s,
                      noise=False, seed=seed, band=band * s, shift=shift * s, optics=optics * s, **kw)
    frames = [_block_mean(f, s) for f in fine.frames]
    if noise:
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[1])
        frames = [_add_noise(f, gain, read_noise, rng) for f in frames]
    # fine pixel centres: x_fine = s * x + (s - 1) / 2; a transform on the fine grid F becomes T^-1 F T
    t = np.array([[s, 0.0, (s - 1) / 2.0], [0.0, s, (s - 1) / 2.0], [0.0, 0.0, 1.0]])
    transforms = [(np.linalg.inv(t) @ _as_affine3(a) @ t)[:2] for a in fine.transforms]
    depth = _block_mean(fine.depth, s)
    labels = np.ascontiguousarray(fine.labels[s // 2 :: s, s // 2 :: s][: depth.shape[0], : depth.shape[1]])
    jump = fine.params["jump"]
    edges = make_edges(depth, band, jump=jump) if len(fine.params["objects"]) > 1 else np.zeros(depth.shape, bool)
    params = {**fine.params, "shape": tuple(depth.shape), "max_blur": float(max_blur),
              "blur_per_frame": fine.params["blur_per_frame"] / s, "noise": bool(noise), "gain": float(gain),
              "read_noise": float(read_noise), "band": band, "shift": float(shift), "optics": float(optics),
              "margin": fine.params["margin"] / s, "supersample": s,
              "generation_seconds": time.perf_counter() - t_start}
    return SyntheticStack(frames=frames, truth=_block_mean(fine.truth, s), depth=depth, edges=edges, params=params,
                          labels=labels, transforms=transforms, reference=fine.reference)


def make_bench_frames(n_frames, shape, channels=3, dtype=np.uint16, seed=0, *, scene="astronaut"):
    """Yield ``n_frames`` large, realistic-looking frames quickly: for throughput benchmarks only.

    Not physically exact and no ground truth. A photograph is resized to a
    tile of at most about 768 px a side and mirror-tiled to ``shape``; each
    frame blends it with a blurred copy by a weight that depends on a smooth
    depth map and the frame index (so every frame differs and is sharp in a
    different band), then adds static-pattern-free noise (a random window of
    a precomputed noise field). Values are sRGB-encoded: the full integer
    range for ``np.uint8`` / ``np.uint16``, [0, 1] for ``np.float32``.

    Set-up (done on the first ``next()``) takes a second or two for 12 MP;
    after that each 12 MP uint16 RGB frame costs about 0.2 s on two cores.

    Yields
    ------
    (H, W, C) ndarray of ``dtype``; a new array each time.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)):
        raise InputError(f"dtype must be np.uint8, np.uint16 or np.float32, got {dtype}")
    if channels not in (1, 3):
        raise InputError(f"channels must be 1 or 3, got {channels}")
    h, w = (int(s) for s in shape)
    if min(h, w) < 16 or n_frames < 1:
        raise InputError(f"need shape >= 16x16 and n_frames >= 1, got {shape} and {n_frames}")
    maxval = 1.0 if dtype.kind == "f" else float(np.iinfo(dtype).max)
    rng = np.random.default_rng(seed)

    # The tile: a photograph, sRGB-encoded, sharp and blurred (sigma 3 px), mirror-tiled to full size.
    th, tw = -(-h // -(-h // 768)), -(-w // -(-w // 768))
    tile = srgb_encode(_load_scene(scene, (th, tw), channels)) * np.float32(maxval)
    blurred = ndimage.gaussian_filter(tile, (3.0, 3.0, 0.0), mode="mirror")

    def tiled(img):
        return np.pad(img, ((0, h - th), (0, w - tw), (0, 0)), mode="symmetric")

    sharp = tiled(tile)
    diff = tiled(blurred) - sharp
    rows, cols = np.ogrid[0:h, 0:w]
    depth = (n_frames - 1) * (
        0.5 + 0.35 * (cols / w - 0.5) + 0.25 * (rows / h - 0.5) + 0.1 * np.sin(6.0 * cols / w) * np.cos(5.0 * rows / h)
    )
    depth = depth.astype(np.float32)
    margin = 64
    noise = rng.standard_normal((h + margin, w + margin, channels), dtype=np.float32) * np.float32(0.004 * maxval)
    if dtype.kind == "f":
        lo, hi = 0.0, maxval
    else:  # round by truncation after +0.5, folded into the base image and the clip bounds
        sharp += np.float32(0.5)
        lo, hi = 0.5, maxval + 0.49
    # Work in strips of rows so the temporaries stay in cache (memory bandwidth is the limit).
    strip = 32
    weight = np.empty((strip, w), np.float32)
    buf = np.empty((strip, w, channels), np.float32)
    for k in range(n_frames):
        out = np.empty((h, w, channels), dtype)
        dr, dc = rng.integers(0, margin, 2)
        for r0 in range(0, h, strip):
            r1 = min(h, r0 + strip)
            wt, b = weight[: r1 - r0], buf[: r1 - r0]
            np.subtract(depth[r0:r1], np.float32(k), out=wt)
            np.abs(wt, out=wt)
            wt *= np.float32(0.5)
            np.minimum(wt, 1.0, out=wt)
            np.multiply(diff[r0:r1], wt[..., None], out=b)
            b += sharp[r0:r1]
            b += noise[dr + r0 : dr + r1, dc : dc + w]
            np.clip(b, lo, hi, out=b)
            out[r0:r1] = b
        yield out


# ---------------------------------------------------------------- microscopy


@dataclass
class MicroscopyStack:
    """A synthetic fluorescence z-stack (linear, integer samples) and its ground truth.

    Attributes
    ----------
    planes : (Z, C, H, W) uint16 ndarray
        Plane ``z`` is focused at ``z * z_step`` microns; samples of ``bits`` bits (a 12-bit
        camera: 0..4095) over a camera offset, with Poisson-Gaussian noise.
    height : (C, H, W) float32 ndarray
        Microns above plane 0 at which each channel's structures are in focus (the truth a height
        map is measured against).
    signal : (C, H, W) bool ndarray
        Where the channel's structures are (the rest is dark background without focus information).
    z_step, pixel_size : float
        Microns between planes, and per pixel.
    channel_names : tuple of str
    bits : int
    params : dict
    """

    planes: np.ndarray
    height: np.ndarray
    signal: np.ndarray
    z_step: float
    pixel_size: float
    channel_names: tuple
    bits: int
    params: dict = field(default_factory=dict)

    def write_ome(self, path, **metadata):
        """Write the stack as an OME-TIFF (axes ZCYX) with its calibration and channel names, as
        tifffile writes it; ``metadata`` adds or replaces OME fields. Returns ``path``."""
        import tifffile

        meta = {"axes": "ZCYX", "PhysicalSizeX": self.pixel_size, "PhysicalSizeXUnit": "µm",
                "PhysicalSizeY": self.pixel_size, "PhysicalSizeYUnit": "µm", "PhysicalSizeZ": self.z_step,
                "PhysicalSizeZUnit": "µm", "SignificantBits": self.bits,
                "Channel": {"Name": list(self.channel_names)}, **metadata}
        tifffile.imwrite(path, self.planes, photometric="minisblack", metadata=meta)
        return path


def _blobs(shape, rng, count, radius):
    """Nuclei: ``count`` discs of about ``radius`` px, each filled with a speckled texture in (0, 1]."""
    h, w = shape
    rows, cols = np.ogrid[0:h, 0:w]
    out = np.zeros(shape, np.float32)
    speckle = ndimage.gaussian_filter(rng.uniform(0, 1, shape), 1.0)
    speckle = (speckle - speckle.min()) / (speckle.max() - speckle.min() + 1e-9)
    for _ in range(count):
        r = rng.uniform(0.7, 1.3) * radius
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        inside = (rows - cy) ** 2 + (cols - cx) ** 2 <= r * r
        out[inside] = 0.35 + 0.65 * speckle[inside]
    return out


def _filaments(shape, rng, width):
    """A network of fibres (the ridges of smoothed noise), values in [0, 1]."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 3.0 * width)
    ridge = np.exp(-(noise / (0.12 * noise.std())) ** 2)  # synthesis only: not per-pixel pipeline code
    return np.where(ridge > 0.2, ridge, 0.0).astype(np.float32)


def _surface(shape, kind, lo, hi, rng):
    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    t = 0.6 * cols / max(w - 1, 1) + 0.4 * rows / max(h - 1, 1)
    if kind == "curved":
        t = t + 0.8 * (((cols - w / 2) / w) ** 2 + ((rows - h / 2) / h) ** 2)
    elif kind != "tilted":
        raise InputError(f"surface must be 'tilted' or 'curved'; got {kind!r}")
    t = (t - t.min()) / (t.max() - t.min())
    return (lo + (hi - lo) * t).astype(np.float32)


def make_microscopy_stack(*, n_planes=12, shape=(160, 192), channels=2, z_step=2.0, pixel_size=0.65,
                          offsets=(0.0, 6.0), surface="tilted", blur_per_um=0.8, bits=12, noise=True, seed=0,
                          channel_names=None) -> MicroscopyStack:
    """Render a linear multi-channel fluorescence z-stack with a known height per channel.

    Channel 0 is a nuclear stain (textured discs on a dark background) on a ``surface``
    (``"tilted"``: a plane; ``"curved"``: a bowl) that spans the middle of the stack; channel
    ``c`` > 0 is a network of fibres on the same surface shifted by ``offsets[c]`` microns (a second
    channel offset in depth). Fluorescence adds up (no occlusion): each channel of plane ``z`` is
    its structures blurred by a Gaussian of sigma ``0.5 + blur_per_um * |height - z * z_step|``
    pixels (a ladder of blurs interpolated per pixel), over a camera offset of 100, scaled to about
    3/4 of ``bits`` bits, with Poisson-Gaussian noise, stored as uint16 (no rescaling to 16 bits).
    """
    if not 1 <= channels <= 8:
        raise InputError(f"channels must be 1 to 8; got {channels}")
    rng = np.random.default_rng(seed)
    offsets = tuple(offsets) + (0.0,) * max(0, channels - len(offsets))
    span = (n_planes - 1) * z_step
    h, w = shape
    names = tuple(channel_names or (["DAPI", "GFP", "mCherry", "Cy5", "C4", "C5", "C6", "C7"][:channels]))
    base = _surface(shape, surface, 0.2 * span, 0.8 * span - max(offsets[:channels]), rng)
    top = (1 << bits) - 1
    planes = np.empty((n_planes, channels, h, w), np.uint16)
    heights = np.empty((channels, h, w), np.float32)
    signal = np.empty((channels, h, w), bool)
    sigmas = np.concatenate([np.arange(0.5, 3.0, 0.25), 3.0 * 1.15 ** np.arange(0, 40)])
    for c in range(channels):
        texture = _blobs(shape, rng, int(h * w / 900), 8.0) if c == 0 else _filaments(shape, rng, 1.0)
        heights[c] = base + np.float32(offsets[c])
        signal[c] = texture > 0.05
        radius_all = [0.5 + blur_per_um * np.abs(heights[c] - z * z_step) for z in range(n_planes)]
        need = float(max(r.max() for r in radius_all))
        ladder_s = sigmas[: int(np.searchsorted(sigmas, need)) + 2]
        ladder = np.stack([ndimage.gaussian_filter(texture, s, mode="reflect") for s in ladder_s])
        flat = ladder.reshape(len(ladder_s), -1)
        pix = np.arange(h * w)
        for z in range(n_planes):
            t = np.interp(radius_all[z].ravel(), ladder_s, np.arange(len(ladder_s), dtype=np.float64))
            i0 = np.minimum(t.astype(np.intp), len(ladder_s) - 2)
            f = (t - i0).astype(np.float32)
            value = flat[i0, pix] * (1 - f) + flat[i0 + 1, pix] * f
            x = (100.0 + 0.75 * top * value.reshape(h, w)) / top
            if noise:
                x = _add_noise(x, gain=4.0 * top, read_noise=2.0 / top, rng=rng)
            planes[z, c] = np.rint(np.clip(x, 0, 1) * top).astype(np.uint16)
    params = {"n_planes": n_planes, "shape": shape, "channels": channels, "z_step": z_step,
              "pixel_size": pixel_size, "offsets": offsets[:channels], "surface": surface,
              "blur_per_um": blur_per_um, "bits": bits, "noise": noise, "seed": seed}
    return MicroscopyStack(planes, heights, signal, float(z_step), float(pixel_size), names, bits, params)
