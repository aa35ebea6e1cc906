"""Readers decode into the caller's buffer (a backend's ``host_buffer``: pinned memory on the cuda
backend, uploaded without another host copy) where the decoder can write the frame's final layout,
and give exactly the frame they give without one."""

import numpy as np
import pytest
import tifffile
from PIL import Image

import gpustack
import gpustack.pipeline
from gpustack.backends.cpu import CpuBackend
from gpustack.io import list_frames, read_frame

RNG = np.random.default_rng(5)


def _write(folder, kind):
    path = folder / ("f.dng" if kind == "dng" else "f.jpg" if kind == "jpeg" else "f.tif")
    rgb16 = RNG.integers(0, 65536, (24, 32, 3), dtype=np.uint16)
    if kind == "rgb16":
        tifffile.imwrite(path, rgb16, photometric="rgb")
    elif kind == "gray8":
        tifffile.imwrite(path, RNG.integers(0, 256, (24, 32), dtype=np.uint8), photometric="minisblack")
    elif kind == "float32":
        tifffile.imwrite(path, RNG.random((24, 32, 3), dtype=np.float32), photometric="rgb")
    elif kind == "tiled_zlib":
        tifffile.imwrite(path, rgb16, photometric="rgb", tile=(16, 16), compression="zlib")
    elif kind == "planar":
        tifffile.imwrite(path, np.moveaxis(rgb16, -1, 0), photometric="rgb", planarconfig="separate")
    elif kind == "12bit":
        tifffile.imwrite(path, RNG.integers(0, 4096, (24, 32), dtype=np.uint16), photometric="minisblack",
                         bitspersample=12)
    elif kind == "rgba":
        tifffile.imwrite(path, RNG.integers(0, 256, (24, 32, 4), dtype=np.uint8), photometric="rgb",
                         extrasamples=["unassalpha"])
    elif kind == "bigendian":
        tifffile.imwrite(path, rgb16.astype(">u2"), photometric="rgb", byteorder=">")
    elif kind == "jpeg":
        Image.fromarray((rgb16 >> 8).astype(np.uint8)).save(path, quality=90)
    elif kind == "dng":
        from dng import mosaic_from_linear, write_dng

        mosaic = mosaic_from_linear(RNG.random((24, 32, 3)).astype(np.float32), black=512, white=16383)
        write_dng(path, mosaic, black=512, white=16383)
    return path


class Recorder:
    def __init__(self):
        self.given = []

    def __call__(self, shape, dtype):
        buf = np.full(shape, 7, dtype)  # not zeros: a sample the decoder skipped would show
        self.given.append(buf)
        return buf


@pytest.mark.parametrize("kind", ["rgb16", "gray8", "float32", "tiled_zlib", "bigendian", "dng"])
def test_decoded_into_the_buffer(tmp_path, kind):
    (src,) = list_frames([_write(tmp_path, kind)])
    rec = Recorder()
    frame = read_frame(src, 0, alloc=rec)
    plain = read_frame(src, 0)
    assert len(rec.given) == 1 and frame.data is rec.given[0]
    assert frame.data.dtype == plain.data.dtype and frame.data.flags.c_contiguous
    np.testing.assert_array_equal(frame.data, plain.data)


@pytest.mark.parametrize("kind", ["planar", "12bit", "rgba", "jpeg"])
def test_decoded_as_usual_where_the_layout_differs(tmp_path, kind):
    """Planar samples, 12 bits scaled to 16, alpha dropped, JPEG: the decoder's output
    is not the frame, so no buffer is asked for, and the frame is the same."""
    (src,) = list_frames([_write(tmp_path, kind)])
    rec = Recorder()
    frame = read_frame(src, 0, alloc=rec)
    assert rec.given == []
    np.testing.assert_array_equal(frame.data, read_frame(src, 0).data)


def test_the_pipeline_decodes_into_the_backends_host_buffer(tmp_path, monkeypatch):
    """Every TIFF frame of a stack (both passes of the depthmap method too) goes into host_buffer
    memory, and the output is the same bytes."""
    from cuda_cases import write_moving_stack

    folder = write_moving_stack(tmp_path / "in", "tiff16", n=4, shape=(64, 96))

    class Recording(CpuBackend):
        calls = 0

        def host_buffer(self, shape, dtype):
            Recording.calls += 1
            return super().host_buffer(shape, dtype)

    want = gpustack.stack(folder, backend="cpu", method="depthmap")
    be = Recording()
    monkeypatch.setattr(gpustack.pipeline, "get_backend", lambda name: be)
    got = gpustack.stack(folder, backend="cpu", method="depthmap")
    assert Recording.calls == 8  # four frames, read twice
    np.testing.assert_array_equal(got.image, want.image)
    np.testing.assert_array_equal(got.depth, want.depth)
