#!/usr/bin/env python
"""Quality of the fusion methods, where the truth is known and where it is not.

Synthetic stacks (gpustack.synth, truth known): camera-like frames (rendered at 2x and averaged
into pixels, a lens blur of sigma 0.7 px) with occlusion edges, smooth surfaces and hair-like
texture, sensor noise from clean to a high-ISO camera, and a full-band scene (no lens blur). Per
scene and method: PSNR against the all-in-focus truth (sRGB-encoded, central crop) over the whole
image, in the band of ``--band`` px around the depth edges (where halos live) and in the interior
(the rest); the depth map's Pearson correlation with the true depth (whole crop) and its mean
absolute error on textured pixels (frames); and the tone error against the truth (mean absolute
difference of the Gaussian sigma 6 px local means, levels of 255). Methods: gpustack's ``soft``
(the default), ``pyramid`` and ``depthmap``, default options otherwise (so the frames are aligned,
similarity); the two per-pixel bounds of the stack (``oracle``: each pixel from the frame nearest
its true depth; ``best``: from the frame nearest the truth, which peeks at the truth and at the
noise); and enfuse (``enfuse`` on PATH: Debian's ``enfuse`` package) with the usual focus-stacking
weights (contrast only, hard mask, LoG edges, l-star projection), fed the motionless frames as
16-bit TIFFs (no align_image_stack: there is no motion); and openfocus (PyPI, ``$OPENFOCUS`` or
``openfocus`` on PATH; it brings PyTorch, so best in its own venv), its neural default StackMFF v3
and its dual-tree complex wavelet method, ``--align none --no-exposure-match --cpu``.

Real stacks (no truth): the tone measure of the issue. Where the depth map confidently names
frame k as the sharpest (confidence >= 0.3), the local mean (Gaussian sigma 6 px) of the fused
image is compared with that of frame k aligned into the output geometry (the run's own transforms
and gains, through the backend's warp). Which frame is sharp is itself a judgement, so three
columns: ``ref`` uses one depth map for every method, the ``pyramid`` method's (the one both old
methods write, and the one the ``depthmap`` method composes its image from); ``own`` uses the
method's own depth map; ``judge`` uses a judge no method uses, ``metrics.sharpest_frame`` (the
frame of the most fine detail, sRGB luma minus its sigma 1 px blur, squared and averaged over the
tone measure's sigma 6 px window; confidence as the depth maps'), the same for every method.

    python bench/quality.py [--frames 12] [--size 384x512] [--band 7] [--backend cpu]
                            [--scenes all|NAME,...] [--real all|none|NAME,...] [--no-peer]

Prints a table per scene and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gpustack  # noqa: E402
from gpustack import metrics, synth  # noqa: E402

CROP = 16
METHODS = ("soft", "pyramid", "depthmap")
#: sensor presets: electrons at full scale and read noise (synth.make_stack's gain, read_noise)
NOISE = {"clean": None, "iso100": (20000.0, 0.0005), "iso800": (4000.0, 0.001), "iso6400": (500.0, 0.004)}
CAMERA = {"supersample": 2, "optics": 0.7}
#: name -> (scene, depth map, noise, camera-like)
SCENES = {
    "astronaut/mixed iso800": ("astronaut", "mixed", "iso800", True),
    "coffee/steps clean": ("coffee", "steps", "clean", True),
    "coffee/steps iso100": ("coffee", "steps", "iso100", True),
    "immunohistochemistry/mixed iso6400": ("immunohistochemistry", "mixed", "iso6400", True),
    "grass/mixed iso800 (hair-like)": ("grass", "mixed", "iso800", True),
    "chelsea/slope iso800 (fur)": ("chelsea", "slope", "iso800", True),
    "rocket/dome iso6400": ("rocket", "dome", "iso6400", True),
    "astronaut/mixed iso800 full-band": ("astronaut", "mixed", "iso800", False),
    "coffee/steps iso800 full-band": ("coffee", "steps", "iso800", False),
}
REAL = {"examples/pcb": ROOT / "examples" / "pcb",
        "beetle-28": ROOT.parent / "shared" / "data" / "stacks" / "beetle-28",
        "wbc-microscope-10": ROOT.parent / "shared" / "data" / "stacks" / "wbc-microscope-10"}
REAL_FALLBACK = Path("/work/shared/data/stacks")  # the shared data beside the main checkout
TONE_CONFIDENCE = 0.3
#: openfocus's neural default (StackMFF v3, weights shipped in the package) and its best classical method here
OPENFOCUS_METHODS = ("stackmffv3", "dtcwt")


def make(name, n_frames, shape, band, seed=0):
    scene, depth, noise, camera = SCENES[name]
    kw = dict(scene=scene, depth=depth, n_frames=n_frames, shape=shape, seed=seed, band=band)
    if noise == "clean":
        kw["noise"] = False
    else:
        kw["gain"], kw["read_noise"] = NOISE[noise]
    if camera:
        kw.update(CAMERA)
    return synth.make_stack(**kw)


def _write_frames(frames, tmp: Path) -> list[str]:
    """The linear frames as sRGB 16-bit TIFFs in ``tmp``, named in shot order."""
    import tifffile

    paths = []
    for k, f in enumerate(frames):
        p = tmp / f"f{k:03d}.tif"
        tifffile.imwrite(p, np.rint(metrics.srgb_encode(f) * 65535.0).astype(np.uint16))
        paths.append(str(p))
    return paths


def _read_result(path: Path):
    import tifffile

    img = tifffile.imread(path)[..., :3]
    return metrics.srgb_decode(img.astype(np.float64) / float(np.iinfo(img.dtype).max))


def openfocus(frames, tmp: Path, method: str):
    """openfocus's result (linear (H, W, C)) with ``method``, or None where it is not installed
    (``$OPENFOCUS`` or ``openfocus`` on PATH; PyPI's ``openfocus``, with PyTorch, in its own venv)."""
    exe = os.environ.get("OPENFOCUS") or shutil.which("openfocus")
    if exe is None:
        return None
    folder = tmp / "openfocus_in"
    folder.mkdir(exist_ok=True)
    _write_frames(frames, folder)
    out = tmp / f"openfocus_{method}.tif"
    subprocess.run([exe, "--input", str(folder), "--output", str(out), "--method", method, "--cpu",
                    "--no-exposure-match", "--align", "none"], check=True, capture_output=True)
    return _read_result(out)


def enfuse(frames, tmp: Path):
    """enfuse's focus-stacking result (linear float32 (H, W, C)) of linear frames, or None without it."""
    exe = shutil.which("enfuse")
    if exe is None:
        return None
    paths = _write_frames(frames, tmp)
    out = tmp / "enfuse.tif"
    # the enfuse manual's focus-stacking weights: contrast only, hard mask, Laplacian-of-Gaussian edges
    # (best of the recipes we tried on coffee/steps: 35.9 dB, against 31.3 for the plain 5x5 window)
    cmd = [exe, "--exposure-weight=0", "--saturation-weight=0", "--contrast-weight=1", "--hard-mask",
           "--contrast-window-size=5", "--contrast-edge-scale=0.3", "--gray-projector=l-star", "--depth=16",
           f"--output={out}", *paths]
    subprocess.run(cmd, check=True, capture_output=True)
    return _read_result(out)


def _scores(linear, st, truth, cut, crop):
    """whole / edge / interior PSNR and the tone error against the truth of a linear (H, W, C) image."""
    img = metrics.srgb_encode(np.clip(linear, 0, 1))
    t = truth[cut]
    edges = st.edges[cut]
    row = {"whole": metrics.psnr(img, t, crop=crop)}
    has_edges = edges[crop:-crop, crop:-crop].any()
    row["edge"] = metrics.psnr(img, t, mask=edges, crop=crop) if has_edges else float("nan")
    row["interior"] = metrics.psnr(img, t, mask=~edges, crop=crop)
    inner = np.zeros(edges.shape, bool)
    inner[crop:-crop, crop:-crop] = True
    row["tone"] = metrics.tone_error(np.clip(linear, 0, 1), [st.truth[cut]], np.zeros(edges.shape), inner)
    return row


def evaluate(name, *, n_frames, shape, band, backend, peer=True) -> dict:
    st = make(name, n_frames, shape, band)
    truth = metrics.srgb_encode(st.truth)
    textured = metrics.textured_mask(st.truth)
    rows = {}
    for method in METHODS:
        res = gpustack.stack(st.frames, backend=backend, method=method)
        # default options align (similarity): on these motionless stacks the estimator's residual
        # can pass the snap threshold and crop a pixel or two; compare on the part kept
        r0, r1, c0, c1 = res.crop or (0, truth.shape[0], 0, truth.shape[1])
        cut = (slice(r0, r1), slice(c0, c1))
        row = _scores(res.linear, st, truth, cut, CROP)
        row["depth_corr"] = metrics.depth_correlation(res.depth, st.depth[cut], crop=CROP)
        row["depth_mae"] = metrics.depth_mae(res.depth, st.depth[cut], mask=textured[cut], crop=CROP)
        rows[method] = row
    full = (slice(None), slice(None))
    rows["oracle"] = _scores(metrics.oracle_fusion(st.frames, st.depth), st, truth, full, CROP)
    rows["best"] = _scores(metrics.best_pick_fusion(st.frames, st.truth), st, truth, full, CROP)
    if peer:
        with tempfile.TemporaryDirectory() as tmp:
            peers = {"enfuse": enfuse(st.frames, Path(tmp))}
            for method in OPENFOCUS_METHODS:
                peers[f"openfocus {method}"] = openfocus(st.frames, Path(tmp), method)
        for name, img in peers.items():
            if img is not None:
                rows[name] = _scores(img, st, truth, full, CROP)
    return rows


def aligned_frames(paths, res, backend):
    """Every frame of ``paths`` in the output geometry of ``res``: decoded to linear light, warped
    with the run's transform and gains on the backend, cropped like the result ((H, W, C) float32)."""
    from gpustack.backends import get_backend
    from gpustack.color import decode_lut
    from gpustack.io import list_frames, read_frame

    be = get_backend(backend)
    out = []
    for k, src in enumerate(list_frames(paths, order=res.options.order)):
        frame = read_frame(src, k)
        lut = be.to_device(decode_lut(frame.data.dtype, frame.transfer))
        dst = be.empty((frame.shape[2],) + frame.shape[:2], np.float32)
        al = res.frames[k].alignment
        affine = np.eye(2, 3) if al is None else np.array(al["affine"])
        gains = np.ones(frame.shape[2], np.float32) if al is None else np.array(al["gains"], np.float32)
        be.warp(be.to_device(frame.data), lut, affine, gains, dst)
        img = np.moveaxis(be.to_host(dst), 0, -1)
        if res.crop:
            r0, r1, c0, c1 = res.crop
            img = img[r0:r1, c0:c1]
        out.append(np.ascontiguousarray(img))
    return out


def real_tone(path: Path, backend) -> dict:
    results = {m: gpustack.stack([str(path)], backend=backend, method=m) for m in METHODS}
    ref = results["pyramid"]
    frames = aligned_frames([str(path)], ref, backend)
    judge, judge_conf = metrics.sharpest_frame(frames)
    rows = {}
    for m, res in results.items():
        assert res.crop == ref.crop and res.linear.shape == ref.linear.shape
        row = {"ref": metrics.tone_error(res.linear, frames, ref.depth, ref.confidence >= TONE_CONFIDENCE)}
        row["own"] = metrics.tone_error(res.linear, frames, res.depth, res.confidence >= TONE_CONFIDENCE)
        row["judge"] = metrics.tone_error(res.linear, frames, judge, judge_conf >= TONE_CONFIDENCE)
        rows[m] = row
    return rows


def machine() -> str:
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--size", default="384x512", help="HxW")
    p.add_argument("--band", type=int, default=7, help="half-width in px of the edge band")
    p.add_argument("--backend", default="cpu")
    p.add_argument("--scenes", default="all", help="all, none, or a comma list of names (see SCENES)")
    p.add_argument("--real", default="all", help="all, none, or a comma list of: " + ", ".join(REAL))
    p.add_argument("--no-peer", action="store_true", help="skip enfuse and openfocus")
    args = p.parse_args(argv)
    shape = tuple(int(v) for v in args.size.split("x"))
    names = list(SCENES) if args.scenes == "all" else [] if args.scenes == "none" else args.scenes.split(",")
    out = {"machine": machine(), "gpustack": gpustack.__version__, "synthetic": {}, "real": {}}
    print(f"{out['machine']}; {args.frames} frames of {shape[1]}x{shape[0]}, central crop -{CROP} px, sRGB PSNR "
          f"against the truth: whole / edge band (+-{args.band} px) / interior; depth: correlation, MAE (frames, "
          f"textured); tone: local-mean error against the truth (levels of 255)")
    for name in names:
        rows = evaluate(name, n_frames=args.frames, shape=shape, band=args.band, backend=args.backend,
                        peer=not args.no_peer)
        out["synthetic"][name] = rows
        print(f"\n{name}")
        for method, r in rows.items():
            depth = f"  depth {r['depth_corr']:.3f} {r['depth_mae']:.2f}" if "depth_corr" in r else ""
            print(f"  {method:22s} {r['whole']:6.2f} {r['edge']:6.2f} {r['interior']:6.2f}  tone {r['tone']:5.2f}{depth}")
    real = list(REAL) if args.real == "all" else [] if args.real == "none" else args.real.split(",")
    for name in real:
        path = REAL[name]
        if not path.is_dir() and (REAL_FALLBACK / name).is_dir():
            path = REAL_FALLBACK / name
        if not path.is_dir():
            print(f"\n{name}: not found ({path}), skipped")
            continue
        rows = real_tone(path, args.backend)
        out["real"][name] = rows
        print(f"\n{name}: tone error (levels of 255), reference depth / own depth / judge")
        for method, r in rows.items():
            print(f"  {method:22s} {r['ref']:6.2f} {r['own']:6.2f} {r['judge']:6.2f}")
    print("JSON " + json.dumps(out))


if __name__ == "__main__":
    main()
