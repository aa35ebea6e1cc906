"""Quality numbers for judging a fused result against a known truth.

Everything here is plain NumPy/SciPy (no scikit-image), computed in float64.
Images are ``(H, W)`` or ``(H, W, C)`` arrays; a ``mask`` is an ``(H, W)``
bool array and applies to every channel. ``crop`` removes that many pixels
on each side before anything is measured (the border of a fused result is
often undefined after alignment).

Also here: the two baselines every fusion method must beat
(:func:`naive_fusion`, :func:`mean_fusion`), the two per-pixel bounds of a
synthetic stack (:func:`oracle_fusion`, :func:`best_pick_fusion`), the tone
measure for stacks without a truth (:func:`tone_error`), a judge of the
sharpest frame that no fusion method uses (:func:`sharpest_frame`) and the
exact sRGB transfer curve.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import InputError

__all__ = [
    "psnr",
    "ssim",
    "depth_mae",
    "textured_mask",
    "naive_fusion",
    "mean_fusion",
    "oracle_fusion",
    "best_pick_fusion",
    "tone_error",
    "sharpest_frame",
    "depth_correlation",
    "srgb_encode",
    "srgb_decode",
    "luminance",
]

#: Rec. 709 / sRGB luminance weights (for linear RGB).
LUMA_WEIGHTS = (0.2126, 0.7152, 0.0722)


# ---------------------------------------------------------------- sRGB curve


def srgb_encode(x):
    """Linear light in [0, 1] to the sRGB-encoded value (IEC 61966-2-1, exact).

    Input is clipped to [0, 1]; computed in float64, returned as float32.
    """
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    y = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)
    return y.astype(np.float32)


def srgb_decode(x):
    """sRGB-encoded value in [0, 1] to linear light (IEC 61966-2-1, exact).

    Input is clipped to [0, 1]; computed in float64, returned as float32.
    """
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    y = np.where(x <= 0.04045, x / 12.92, np.power((x + 0.055) / 1.055, 2.4))
    return y.astype(np.float32)


# ---------------------------------------------------------------- helpers


def _crop(a, crop):
    if crop < 0:
        raise InputError(f"crop must be >= 0, got {crop}")
    if crop == 0:
        return a
    if 2 * crop >= min(a.shape[0], a.shape[1]):
        raise InputError(f"crop={crop} removes the whole {a.shape[0]}x{a.shape[1]} image")
    return a[crop:-crop, crop:-crop]


def _pair(a, b, crop):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"images differ in shape: {a.shape} vs {b.shape}; they must match")
    if a.ndim not in (2, 3):
        raise InputError(f"images must be (H, W) or (H, W, C), got shape {a.shape}")
    return _crop(a, crop), _crop(b, crop)


def _masked_mean(values, mask, crop):
    """Mean of ``values`` (already cropped) over the pixels of ``mask`` (full size, cropped here)."""
    if mask is None:
        return float(np.mean(values))
    mask = np.asarray(mask, dtype=bool)
    full = (values.shape[0] + 2 * crop, values.shape[1] + 2 * crop)
    if mask.shape != full:
        raise InputError(f"mask has shape {mask.shape}, expected {full} (H, W)")
    mask = _crop(mask, crop)
    if not mask.any():
        raise InputError("mask selects no pixels")
    return float(np.mean(values[mask]))


def luminance(img):
    """(H, W) luminance of an (H, W), (H, W, 1) or (H, W, 3) image (Rec. 709 weights), float64."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 1:
        return img[..., 0]
    if img.ndim == 3 and img.shape[2] == 3:
        return img @ np.asarray(LUMA_WEIGHTS)
    raise InputError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {img.shape}")


# ---------------------------------------------------------------- metrics


def psnr(a, b, *, mask=None, data_range=1.0, crop=0) -> float:
    """Peak signal-to-noise ratio in dB, over all channels of the (masked) pixels.

    ``inf`` when the images are equal. Works on linear or encoded images alike
    (say which in a report: the numbers differ).
    """
    a, b = _pair(a, b, crop)
    mse = _masked_mean((a - b) ** 2, mask, crop)
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def ssim(a, b, *, crop=0, data_range=1.0) -> float:
    """Mean structural similarity (Wang et al. 2004), channels averaged.

    Gaussian window sigma 1.5 (truncated at 3.5 sigma: 11x11), population
    covariance, K1 = 0.01, K2 = 0.03, reflect borders, and the mean taken
    without the 5-px strip the window spans at the border: the same number as
    ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=..., channel_axis=-1)``.
    """
    a, b = _pair(a, b, crop)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    sigma, truncate = 1.5, 3.5
    pad = int(truncate * sigma + 0.5)
    if min(a.shape[0], a.shape[1]) < 2 * pad + 1:
        raise InputError(f"ssim needs images of at least {2 * pad + 1}x{2 * pad + 1} after crop, got {a.shape[:2]}")
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def blur(x):
        return ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=truncate)

    scores = []
    for c in range(a.shape[2]):
        x, y = a[..., c], b[..., c]
        ux, uy = blur(x), blur(y)
        vx = blur(x * x) - ux * ux
        vy = blur(y * y) - uy * uy
        vxy = blur(x * y) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        scores.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(scores))


def depth_mae(est, true, *, mask=None, crop=0) -> float:
    """Mean absolute depth error, in frames, over the (masked) pixels."""
    est, true = _pair(est, true, crop)
    if est.ndim != 2:
        raise InputError(f"depth maps must be (H, W), got shape {est.shape}")
    return _masked_mean(np.abs(est - true), mask, crop)


def textured_mask(truth, *, threshold=0.02, radius=3):
    """Pixels where the all-in-focus image has enough local contrast for depth to be measurable.

    The local standard deviation of the sRGB-encoded luminance over a
    ``(2 * radius + 1)``-square window must exceed ``threshold`` (in encoded
    units, 0.02 is 5 steps of 8 bits). ``truth`` is linear light.
    """
    if radius < 1:
        raise InputError(f"radius must be >= 1, got {radius}")
    lum = srgb_encode(luminance(truth)).astype(np.float64)
    size = 2 * radius + 1
    mean = ndimage.uniform_filter(lum, size, mode="reflect")
    mean2 = ndimage.uniform_filter(lum * lum, size, mode="reflect")
    std = np.sqrt(np.maximum(mean2 - mean * mean, 0.0))
    return std > threshold


# ---------------------------------------------------------------- baselines


def _as_stack(frames):
    stack = np.stack([np.asarray(f) for f in frames])
    if stack.ndim not in (3, 4) or len(stack) == 0:
        raise InputError(f"expected a non-empty sequence of (H, W) or (H, W, C) frames, got {stack.shape}")
    return stack


def naive_fusion(frames):
    """Baseline: per pixel, copy the frame whose luminance has the largest |3x3 Laplacian|.

    Laplacian kernel ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` with edge-replicated
    borders; ties go to the earliest frame. Returns the frames' dtype.
    """
    stack = _as_stack(frames)
    best = None
    score = None
    for k in range(len(stack)):
        lum = np.pad(luminance(stack[k]), 1, mode="edge")
        lap = np.abs(lum[:-2, 1:-1] + lum[2:, 1:-1] + lum[1:-1, :-2] + lum[1:-1, 2:] - 4.0 * lum[1:-1, 1:-1])
        if best is None:
            best, score = np.zeros(lap.shape, dtype=np.intp), lap
        else:
            better = lap > score
            best[better] = k
            score = np.where(better, lap, score)
    rows, cols = np.indices(best.shape)
    return stack[best, rows, cols]


def mean_fusion(frames):
    """Baseline: the mean of the frames (float32)."""
    return _as_stack(frames).mean(axis=0, dtype=np.float64).astype(np.float32)


# ---------------------------------------------------------------- bounds and tone


def oracle_fusion(frames, depth):
    """Per-pixel bound: each pixel copied from the frame nearest its true ``depth`` (frame units),
    the sharpest frame by the lens model; what a perfect depth map and a hard per-pixel pick give."""
    stack = _as_stack(frames)
    k = np.clip(np.rint(np.asarray(depth)), 0, len(stack) - 1).astype(np.intp)
    rows, cols = np.indices(k.shape)
    return stack[k, rows, cols]


def best_pick_fusion(frames, truth):
    """Per-pixel bound that peeks at the truth: each pixel copied from the frame whose sRGB-encoded
    value is nearest the encoded ``truth`` there (squared error over channels). With noise it also
    picks the frame whose noise happens to be smallest, so it is an optimistic bound."""
    stack = _as_stack(frames)
    t = srgb_encode(truth).astype(np.float64)
    best = None
    err_best = None
    for k in range(len(stack)):
        d = srgb_encode(stack[k]).astype(np.float64) - t
        err = (d * d).sum(axis=-1) if d.ndim == 3 else d * d
        if best is None:
            best, err_best = np.zeros(err.shape, np.intp), err
        else:
            better = err < err_best
            best[better] = k
            err_best = np.where(better, err, err_best)
    rows, cols = np.indices(best.shape)
    return stack[best, rows, cols]


def tone_error(fused, frames, depth, mask, *, sigma=6.0) -> float:
    """How far the fused image's local tone is from the frames its depth map names, in levels of 255.

    Where ``mask`` (H, W) holds (the depth map is confident), frame ``k = round(depth)`` is the
    sharpest; the measure is the mean absolute difference, over those pixels and the channels,
    between the Gaussian local means (``sigma`` px) of the sRGB-encoded fused image and of frame
    ``k``, times 255. ``fused`` and ``frames`` are linear light in the same geometry.
    """
    fused = np.asarray(fused, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if fused.shape[:2] != mask.shape or np.shape(depth) != mask.shape:
        raise InputError(f"fused {fused.shape}, depth {np.shape(depth)} and mask {mask.shape} must share (H, W)")
    if not mask.any():
        raise InputError("mask selects no pixels")

    def local_mean(img):
        enc = srgb_encode(img).astype(np.float64) * 255.0
        sig = (sigma, sigma, 0) if enc.ndim == 3 else sigma
        return ndimage.gaussian_filter(enc, sig, mode="reflect")

    k = np.clip(np.rint(np.asarray(depth)), 0, len(frames) - 1).astype(np.intp)
    ref = local_mean(fused)
    total, count = 0.0, 0
    for j in np.unique(k[mask]):
        sel = mask & (k == j)
        diff = np.abs(ref - local_mean(frames[j]))[sel]
        total += float(diff.sum())
        count += diff.size
    return total / count


def sharpest_frame(frames, *, sigma=6.0, detail_sigma=1.0):
    """A judge of which frame is sharpest at each pixel that none of the fusion methods uses.

    Per frame, the sRGB-encoded luma (the mean of the encoded channels, levels of 255) minus its
    Gaussian blur of ``detail_sigma`` px is the finest detail; its square, averaged by a Gaussian
    of ``sigma`` px (the tone measure's window), is the frame's detail energy there. Returns
    ``(index, confidence)``, (H, W) float32: the frame of the highest energy and
    ``(best - mean) / best`` over the frames, the confidence the depth maps use (0 where the best
    energy is below ``1e-6`` levels squared, i.e. every frame is flat: far below the 1/12 of a
    quantization step). ``frames`` are linear light, (H, W[, C]), one geometry.
    """
    energies = []
    for f in frames:
        enc = srgb_encode(np.clip(np.asarray(f, dtype=np.float64), 0.0, 1.0)) * 255.0
        y = enc.mean(axis=-1) if enc.ndim == 3 else enc
        detail = y - ndimage.gaussian_filter(y, detail_sigma, mode="reflect")
        energies.append(ndimage.gaussian_filter(detail * detail, sigma, mode="reflect"))
    energy = np.stack(energies)
    best = energy.max(axis=0)
    sure = best > 1e-6
    conf = np.where(sure, (best - energy.mean(axis=0)) / np.where(sure, best, 1.0), 0.0)
    return energy.argmax(axis=0).astype(np.float32), conf.astype(np.float32)


def depth_correlation(est, true, *, crop=0) -> float:
    """Pearson correlation of a depth map with the true depth over every (cropped) pixel."""
    est, true = _pair(est, true, crop)
    if est.ndim != 2:
        raise InputError(f"depth maps must be (H, W), got shape {est.shape}")
    return float(np.corrcoef(est.ravel(), true.ravel())[0, 1])
