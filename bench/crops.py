#!/usr/bin/env python
"""The README's before/after crops: the same windows of a real stack fused by each method.

    python bench/crops.py [--out docs/img] [--backend cpu]

Stacks: ``examples/pcb`` (7 JPEGs of a circuit board) and ``beetle-28`` (28 JPEGs of a beetle's
mandibles, MIT, from the shared data: ``../shared/data/stacks/beetle-28``), default options (so
aligned, similarity). Each PNG shows one window, left to right: ``pyramid`` (the former default),
``depthmap``, ``soft`` (the default), each enlarged by nearest-neighbour pixels (200 % unless the
window is wide), sRGB 8-bit, with the method's name in a strip above.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gpustack  # noqa: E402
from gpustack import metrics  # noqa: E402

METHODS = ("pyramid", "depthmap", "soft")
BEETLE = [ROOT.parent / "shared" / "data" / "stacks" / "beetle-28", Path("/work/shared/data/stacks/beetle-28")]
#: png name -> (stack, (row, col, height, width) in the output geometry, enlargement)
CROPS = {
    "pcb_pins": ("pcb", (760, 1380, 160, 200), 2),
    "pcb_header_edge": ("pcb", (380, 1150, 160, 200), 2),
    "pcb_dark_band": ("pcb", (1047, 495, 200, 300), 1),
    "beetle_mandible_tip": ("beetle", (40, 230, 110, 150), 2),
    "beetle_hairs": ("beetle", (250, 180, 110, 150), 2),
}


def _label(width, text, height=14):
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(strip).text((4, 1), text, fill=(0, 0, 0))
    return np.asarray(strip)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs" / "img"))
    p.add_argument("--backend", default="cpu")
    args = p.parse_args(argv)
    from PIL import Image

    beetle = next((b for b in BEETLE if b.is_dir()), None)
    stacks = {"pcb": ROOT / "examples" / "pcb", "beetle": beetle}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fused = {}
    for name, path in stacks.items():
        if path is None:
            print(f"{name}: not found, skipped")
            continue
        for m in METHODS:
            res = gpustack.stack([str(path)], backend=args.backend, method=m)
            fused[name, m] = (metrics.srgb_encode(np.clip(res.linear, 0, 1)) * 255 + 0.5).astype(np.uint8)
    gap = 4
    for png, (stack, (r, c, h, w), zoom) in CROPS.items():
        if (stack, METHODS[0]) not in fused:
            continue
        panels = []
        for m in METHODS:
            crop = fused[stack, m][r:r + h, c:c + w]
            big = np.repeat(np.repeat(crop, zoom, 0), zoom, 1)
            panels.append(np.concatenate([_label(big.shape[1], m), big], 0))
            panels.append(np.full((panels[-1].shape[0], gap, 3), 255, np.uint8))
        Image.fromarray(np.concatenate(panels[:-1], 1)).save(out / f"{png}.png", optimize=True)
        print(out / f"{png}.png")


if __name__ == "__main__":
    main()
