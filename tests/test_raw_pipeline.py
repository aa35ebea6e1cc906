"""Camera RAW stacks through the whole pipeline: Bayer DNGs (tests/dng.py) developed by the
backend's kernels, aligned on binned proxies, fused; the LibRaw fallback; mixed-stack errors."""

import logging
import sys

import numpy as np
import pytest

import gpustack
from conftest import SHARED_DATA
from dng import write_dng, write_dng_stack
from gpustack import metrics, synth

RAW_FILE = SHARED_DATA / "raw" / "RAW_KODAK_DC50.KDC"


def _psnr(res, truth_lin, crop=16):
    truth = metrics.srgb_encode(truth_lin)
    if res.crop is not None:
        r0, r1, c0, c1 = res.crop
        truth = truth[r0:r1, c0:c1]
    return metrics.psnr(metrics.srgb_encode(np.clip(res.linear, 0, 1)), truth, crop=crop)


@pytest.fixture(scope="module")
def band_limited():
    """A stack with camera-like optics (sigma 1 px) as DNGs, with its truth."""
    st = synth.make_stack(scene="astronaut", depth="mixed", n_frames=6, shape=(192, 256), seed=1, optics=1.0)
    return st


@pytest.fixture(scope="module")
def dng_stack(band_limited, tmp_path_factory):
    return write_dng_stack(band_limited.frames, tmp_path_factory.mktemp("dngstack"))


def test_dng_stack_is_developed_by_the_backend(dng_stack, band_limited):
    res = gpustack.stack(dng_stack, backend="cpu", align="none")
    assert all(f.info["develop"] == "backend" and f.dtype == "mosaic uint16" for f in res.frames)
    assert res.image.shape == (192, 256, 3)
    ours = _psnr(res, band_limited.truth)
    naive = metrics.psnr(metrics.srgb_encode(np.clip(metrics.naive_fusion(band_limited.frames), 0, 1)),
                         metrics.srgb_encode(band_limited.truth), crop=16)
    assert ours > naive + 1.0, (ours, naive)  # still well above the naive fusion of the RGB frames


def test_dng_stack_against_tiff_and_libraw(dng_stack, band_limited):
    """Fused against the truth: with the default RCD demosaic the DNGs come within 0.5 dB of the
    same frames as 16-bit TIFFs (three colours at every pixel, which a Bayer sensor never has)
    and above LibRaw's AHD; MHC and bilinear are further below (measured on this stack: RCD
    -0.17, AHD -0.39, MHC -0.70, bilinear -1.74 dB; README, Camera RAW)."""
    truth = band_limited.truth
    rcd = _psnr(gpustack.stack(dng_stack, backend="cpu", align="none"), truth)
    mhc = _psnr(gpustack.stack(dng_stack, backend="cpu", align="none", demosaic="mhc"), truth)
    bilinear = _psnr(gpustack.stack(dng_stack, backend="cpu", align="none", demosaic="bilinear"), truth)
    libraw = _psnr(gpustack.stack(dng_stack, backend="cpu", align="none", raw_develop="libraw"), truth)
    tiff = _psnr(gpustack.stack(band_limited.as_uint16(), backend="cpu", align="none"), truth)
    assert rcd > tiff - 0.5, (rcd, tiff)
    assert rcd > libraw, (rcd, libraw)
    assert rcd > mhc + 0.3 and mhc > bilinear + 0.5, (rcd, mhc, bilinear)


def test_colour_camera_skips_the_matrix(dng_stack, tmp_path):
    """One frame twice (the fusion of two equal frames is that frame): camera RGB is the sRGB
    development times the camera's matrix."""
    import shutil

    from dng import CAM_FROM_SRGB

    pair = [shutil.copy(dng_stack[0], tmp_path / f"f{k}.dng") for k in range(2)]
    srgb = gpustack.stack(pair, backend="cpu", align="none")
    camera = gpustack.stack(pair, backend="cpu", align="none", color="camera")
    want = srgb.linear.astype(np.float64) @ CAM_FROM_SRGB.T
    np.testing.assert_allclose(camera.linear, want, atol=2e-5)
    assert np.abs(camera.linear - srgb.linear).max() > 0.02  # the matrix does change the colours


def test_raw_motion_is_recovered_from_binned_proxies(tmp_path):
    """Breathing, shifts and rotation on DNG frames: the half-pixel offset of the 2x2-binned proxies
    is accounted for, so the transforms are as good as on RGB frames."""
    kw = dict(scene="astronaut", depth="mixed", n_frames=8, shape=(240, 320), seed=3, optics=0.7)
    moving = synth.make_stack(**kw, breathing=0.02, shift=4.0, rotation=0.3)
    paths = write_dng_stack(moving.frames, tmp_path)
    res = gpustack.stack(paths, backend="cpu")
    err = synth.corner_error(res.transforms, moving.transforms, moving.truth.shape)
    assert err <= 0.1, err  # measured 0.044 (RGB frames: 0.050)
    rgb = gpustack.stack(moving.frames, backend="cpu")
    assert err <= synth.corner_error(rgb.transforms, moving.transforms, moving.truth.shape) + 0.05
    assert _psnr(res, _cut(moving.truth, res)) > _psnr(gpustack.stack(paths, backend="cpu", align="none"),
                                                       _cut(moving.truth, res)) + 2.0


def _cut(truth, res):
    """The full-canvas truth; ``_psnr`` cuts it to ``res.crop`` (kept for symmetry of the call)."""
    return truth


def test_linear_dng_falls_back_to_libraw_with_one_log_line(tmp_path, caplog):
    rng = np.random.default_rng(0)
    base = rng.integers(300, 4000, (40, 48, 3)).astype(np.uint16)
    paths = [write_dng(tmp_path / f"lin{k}.dng", np.clip(base + k * 10, 0, 4095).astype(np.uint16))
             for k in range(3)]
    with caplog.at_level(logging.INFO, logger="gpustack"):
        res = gpustack.stack(paths, backend="cpu", align="none")
    assert all(f.info["develop"].startswith("LibRaw (not a 2x2 Bayer mosaic") for f in res.frames)
    said = [r.getMessage() for r in caplog.records if "LibRaw (not a 2x2 Bayer" in r.getMessage()]
    assert len(said) == 1, said


def test_raw_among_jpegs_is_an_error(dng_stack, tmp_path):
    from PIL import Image

    img = (np.random.default_rng(1).uniform(0, 255, (192, 256, 3))).astype(np.uint8)
    jpgs = []
    for k in range(2):
        p = tmp_path / f"a{k}.jpg"
        Image.fromarray(img).save(p)
        jpgs.append(p)
    with pytest.raises(gpustack.InputError, match=r"dng\) is a camera RAW .* is jpeg uint8; all frames of a stack"):
        gpustack.stack([jpgs[0], dng_stack[0], jpgs[1]], backend="cpu", align="none", reference=0)


def test_cfa_or_camera_mismatch_names_the_frame(band_limited, tmp_path):
    a = write_dng_stack(band_limited.frames[:2], tmp_path / "a", cfa="RGGB")
    b = write_dng_stack(band_limited.frames[2:3], tmp_path / "b", cfa="GRBG")
    b = [b[0].rename(b[0].with_name("frame002.dng"))]
    with pytest.raises(gpustack.InputError, match=r"frame 2 \(frame002.dng\) has the CFA pattern"):
        gpustack.stack(a + b, backend="cpu", align="none", reference=0)
    c = write_dng_stack(band_limited.frames[2:3], tmp_path / "c", model="other")
    c = [c[0].rename(c[0].with_name("frame002.dng"))]
    with pytest.raises(gpustack.InputError, match=r"frame 2 .* is from gpustack other but frame 0 .* gpustack synthetic"):
        gpustack.stack(a + c, backend="cpu", align="none", reference=0)


def test_corrupt_raw_in_a_stack_names_the_file(dng_stack, tmp_path):
    bad = tmp_path / "frame999.dng"
    bad.write_bytes(dng_stack[0].read_bytes()[:3000])
    with pytest.raises(gpustack.DecodeError, match=r"frame999.dng: cannot unpack RAW"):
        gpustack.stack([*dng_stack[:2], bad], backend="cpu", align="none")


def test_cli_raw_options(dng_stack, tmp_path):
    from gpustack.cli import main

    out = tmp_path / "fused.tif"
    assert main(["stack", *map(str, dng_stack[:3]), "-o", str(out), "--demosaic", "bilinear", "--color", "camera",
                 "--align", "none", "--backend", "cpu", "-q"]) == 0
    import json

    side = json.loads(out.with_name("fused.tif.json").read_text())
    assert side["options"]["demosaic"] == "bilinear" and side["options"]["color"] == "camera"
    assert side["frames"][0]["info"]["develop"] == "backend"
    with pytest.raises(SystemExit) as exc:
        main(["stack", *map(str, dng_stack[:2]), "-o", str(tmp_path / "x.tif"), "--demosaic", "ahd"])
    assert exc.value.code == 2


@pytest.mark.skipif(not RAW_FILE.is_file(), reason=f"{RAW_FILE} not found")
def test_real_raw_stacks_like_libraw(tmp_path):
    """The real RAW (Kodak DC50) twice: the fused image is the frame as our kernels develop it,
    and in camera RGB (LibRaw exposes no matrix for this camera) it is close to LibRaw's."""
    import rawpy

    import shutil

    a, b = tmp_path / "a.kdc", tmp_path / "b.kdc"
    shutil.copy(RAW_FILE, a)
    shutil.copy(RAW_FILE, b)
    res = gpustack.stack([a, b], backend="cpu", align="none", color="camera", demosaic="bilinear",
                         brightness=False)
    with rawpy.imread(str(RAW_FILE)) as raw:
        lib = raw.postprocess(gamma=(1, 1), no_auto_bright=True, output_bps=16, use_camera_wb=True,
                              adjust_maximum_thr=0.0, user_flip=0, output_color=rawpy.ColorSpace.raw,
                              demosaic_algorithm=rawpy.DemosaicAlgorithm.LINEAR).astype(np.float64) / 65535
    p = metrics.psnr(np.clip(res.linear, 0, 1)[8:-8, 8:-8], lib[8:-8, 8:-8])
    assert p > 40, p


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
