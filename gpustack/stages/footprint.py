"""How much backend memory a stack needs at its peak: the largest of its phases, not their sum.

The pipeline asks a device backend, before the first frame is uploaded, whether
this much is free (``check_memory``), so a stack that does not fit stops with
the sizes instead of failing halfway. Each phase below counts the arrays that
are alive together in it, as ``pipeline.run`` and ``stages`` allocate them
(``tests/test_footprint.py`` tracks every allocation of real runs and checks
that the estimate covers the peak by a small margin):

- **fold** (pass 1): the fusion state (``SoftFusion``, or ``PyramidFusion`` for the pyramid
  and depthmap methods), the frame being
  uploaded with the backend's two staging buffers, the decode table, and for a
  RAW mosaic the RCD work planes and, when frames move, the developed frame
  that is then warped;
- **finish**: the state still whole while the depth planes are made, then
  the depth smoothing planes beside the fused image;
- **blend** (``depthmap`` method, pass 2): the fused image, the depth planes,
  the blend accumulator and a converted frame, and a frame in flight again;
- **output**: the cropped copies beside the uncropped planes, the summed
  confidence, and the encoded image.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..color import ENCODE_LUT_SIZE
from .fuse import level_shapes
from .soft import SCORE_LEVELS, coarsest_weighted

F32 = 4
RCD_PAD = 10  # the RCD work planes' mirrored border (backends/cpu/develop.py RCD_PAD)
RCD_PLANES = 5
MARGIN = 1.05  # allocator rounding (CuPy's pool rounds every block up to 512 bytes)


@dataclass(frozen=True)
class Footprint:
    """The peak and the phase it falls in, in bytes."""

    peak: int
    phase: str
    phases: dict
    largest: int  # elements of the largest single array (the kernels' index type depends on it)


def _state_bytes(method: str, c: int, height: int, width: int, levels: int,
                 height_map: bool = False, maps: bool = True) -> tuple[int, int]:
    """(scratch, stack): the fusion of ``method`` (``SoftFusion``, or ``PyramidFusion`` for pyramid
    and depthmap) as the frame's scratch, which several stacks' states can share
    (``PerChannelFusion``), and one stack's running state (``STACK_FIELDS``). ``height_map``: the
    soft fusion's depth tracker too (6 planes, and the first frame's scores); ``maps``: the depth
    map's running state (without it, ``soft`` and ``pyramid`` keep none)."""
    plane = height * width
    if method == "soft":
        areas = [h * w for h, w in level_shapes(height, width, SCORE_LEVELS + 1)]
        scratch = (c * sum(areas)                  # the frame's first levels (Gaussian: the Laplacian is
                   + sum(areas[:SCORE_LEVELS])     # made where it is used); the focus score per level
                   + (areas[SCORE_LEVELS - 1] if coarsest_weighted() else 0))  # its sums before the weight
        stack = ((5 if maps else 2) * plane        # best score, weight sum, depth weight and index sums, score sum
                 + 2 * c * plane                   # weighted sums of the frames and of their finest level
                 + (7 * plane if height_map else 0))  # DepthTracker: DepthState and the first frame's scores
        return F32 * scratch, F32 * stack
    areas = [h * w for h, w in level_shapes(height, width, levels)]
    all_levels, coarsest = sum(areas), areas[-1]
    scratch = (c * all_levels                      # the frame's pyramid (Gaussian, then Laplacian)
               + 2 * plane)                        # squared sums and row box sums
    stack = (c * (all_levels - coarsest)           # best coefficient per level
             + (all_levels - coarsest)             # best energy per level
             + c * coarsest                        # running sum of the coarsest level
             + (7 * plane if maps else 0))         # depth bookkeeping (DepthState), the first frame's scores
    return F32 * scratch, F32 * stack


def stack_footprint(channels: int, height: int, width: int, levels: int, *, frame_bytes: int, mosaic: bool = False,
                    moved: bool = True, method: str = "soft", demosaic: str = "rcd",
                    output_bytes: int = 2, per_channel: bool = False,
                    height_map: bool = False, maps: bool = True) -> Footprint:
    """The peak memory of a stack of (``height``, ``width``, ``channels``) frames fused over
    ``levels`` pyramid levels; ``frame_bytes`` is one decoded frame as uploaded (the mosaic
    for camera RAW, ``mosaic=True``); ``moved``: frames may be warped (alignment on);
    ``output_bytes``: bytes per sample of the encoded image (1 or 2); ``per_channel``: each channel
    fused by its own single-channel state (``stages.channels.PerChannelFusion``), beside the frame's
    (C, H, W) input; ``height_map``: the soft fusion's height-map confidence is made too; ``maps``:
    the depth map and its confidence (``StackOptions.maps``; the depthmap method always makes them)."""
    c, plane = channels, height * width
    maps = maps or method == "depthmap"
    contrast = height_map and method == "soft"  # the height map's confidence and plane index
    if per_channel:  # one scratch, a running state per channel, and the frame's (C, H, W) input
        scratch, stack = _state_bytes(method, 1, height, width, levels, height_map, maps)
        state = scratch + c * stack + F32 * c * plane
    else:
        state = sum(_state_bytes(method, c, height, width, levels, height_map, maps))
    decode_table = F32 * 65536                      # the largest decode table (16-bit samples)
    encode_table = output_bytes * ENCODE_LUT_SIZE   # the output's encoding table, uploaded at the end
    image = F32 * c * plane
    developed = image if mosaic and moved else 0    # a RAW frame developed before its warp
    rcd = F32 * RCD_PLANES * (height + 2 * RCD_PAD) * (width + 2 * RCD_PAD) if mosaic and demosaic == "rcd" else 0
    held = 2 * frame_bytes + decode_table + developed  # the upload slots (two frames), kept to the end
    in_flight = frame_bytes + rcd + held
    encoded = output_bytes * c * plane
    per_map = (c if per_channel else 1) if maps else 0  # depth, confidence (and contrast) planes: one per channel
    kinds = 2 + (2 if contrast else 0)  # depth and confidence; the height map's confidence and index
    phases = {
        "fold": state + in_flight,
        # beside the whole state: the contrast planes, then one tracker's (or the fusion's) depth and
        # confidence (each depth tracker is released as its index is made)
        "finish": max(state + ((per_map if contrast else 0) + (2 if maps else 0)) * F32 * plane,
                      image + ((per_map * (kinds + 1) - 1 + 4) * F32 * plane if maps else 0))  # fused, maps, smoothing
        + held,
        "output": max(2 * (image + per_map * (kinds + 1) * F32 * plane),  # cropped copies beside the planes
                      image + per_map * (kinds + 1) * F32 * plane + encoded + encode_table)  # the encoding
        + (F32 * plane if maps else 0)  # the summed confidence
        + held + max(0, encode_table - frame_bytes),  # a slot grows to the table
    }
    if method == "depthmap":
        phases["blend"] = 3 * image + 4 * F32 * plane + in_flight
    phase = max(phases, key=phases.get)
    largest = max(c * plane, rcd // F32)
    return Footprint(int(MARGIN * phases[phase]), phase, phases, largest)
