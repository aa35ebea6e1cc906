"""The memory estimate a device backend checks before the first upload (``stages.footprint``)
against the real peak: every allocation of whole runs tracked through the emulated cuda backend
(the cuda backend's own op code, its RCD work planes and staging slots included)."""

import weakref

import cuda_shim
import numpy as np
import pytest
from conftest import toolchain_missing
from cuda_cases import make_frames

import gpustack
import gpustack.pipeline
from gpustack.backends.cuda import _kernels as K
from gpustack.stages.footprint import stack_footprint
from gpustack.stages.fuse import check_levels


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    if cuda_shim.compiler() is None:
        toolchain_missing("g++ not found: cannot emulate the CUDA kernels")
    return cuda_shim.build(K.kernel_dir(), tmp_path_factory.getbasetemp() / "cuda_shim", "int")


def tracking_backend(lib):
    """The emulated cuda backend, counting the bytes alive, and the two upload slots the real
    backend holds from its first upload on: used in turn, each grown to the largest upload it took."""
    base = type(cuda_shim.emulated_backend(lib))

    class Tracking(base):
        def __init__(self):
            super().__init__()
            self.live = self.peak = 0
            self.slots, self.next_slot = [0, 0], 0
            self.checked = None

        def _count(self, array):
            n = array.nbytes
            self.live += n
            self.peak = max(self.peak, self.live + sum(self.slots))
            weakref.finalize(array.host, self._free, n)
            return array

        def _free(self, n):
            self.live -= n

        def empty(self, shape, dtype):
            return self._count(base.empty(shape, dtype))

        def full(self, shape, value, dtype):
            return self._count(base.full(shape, value, dtype))

        def to_device(self, host_array):
            slot, self.next_slot = self.next_slot, self.next_slot ^ 1
            self.slots[slot] = max(self.slots[slot], np.asarray(host_array).nbytes)
            return self._count(base.to_device(host_array))

        def check_memory(self, footprint, what):
            self.checked = footprint
            return super().check_memory(footprint, what)

    return Tracking()


def _run(lib, monkeypatch, inputs, **opts):
    be = tracking_backend(lib)
    monkeypatch.setattr(gpustack.pipeline, "get_backend", lambda name: be)
    result = gpustack.stack(inputs, backend="cpu", **opts)
    monkeypatch.undo()
    return be, result


CASES = [(dtype, method, align) for dtype in (np.uint8, np.uint16, np.float32) for method in ("soft", "pyramid", "depthmap")
         for align in ("none", "similarity")]


@pytest.mark.filterwarnings("ignore:frame .* matched worse than no warp")
@pytest.mark.parametrize("dtype,method,align", CASES)
def test_estimate_covers_the_peak_closely(lib, monkeypatch, dtype, method, align):
    frames = make_frames(n=4, shape=(360, 480, 3), dtype=dtype)  # large enough that the tables do not dominate
    be, _ = _run(lib, monkeypatch, frames, method=method, align=align)
    fp = be.checked
    assert fp is not None, "the pipeline did not check the memory before the first upload"
    assert be.peak <= fp.peak <= 1.15 * be.peak, f"estimate {fp.peak} ({fp.phase}), tracked peak {be.peak}"


@pytest.mark.filterwarnings("ignore:frame .* matched worse than no warp")
@pytest.mark.parametrize("method,align", [("soft", "similarity"), ("soft", "none"), ("pyramid", "similarity"),
                                          ("depthmap", "none")])
def test_estimate_covers_the_peak_without_maps(lib, monkeypatch, method, align):
    """``maps=False``: the state without the maps' sums and no maps at the finish, estimated as
    closely (the depthmap method makes them all the same)."""
    frames = make_frames(n=4, shape=(360, 480, 3), dtype=np.uint16)
    be, result = _run(lib, monkeypatch, frames, method=method, align=align, maps=False)
    assert (result.depth is None) == (method != "depthmap")
    fp = be.checked
    assert be.peak <= fp.peak <= 1.15 * be.peak, f"estimate {fp.peak} ({fp.phase}), tracked peak {be.peak}"
    if method == "soft":  # three planes fewer than with the maps
        with_maps, _ = _run(lib, monkeypatch, frames, method=method, align=align)
        assert with_maps.peak - be.peak >= 3 * 4 * 360 * 480


@pytest.mark.parametrize("method", ["soft", "pyramid"])
@pytest.mark.parametrize("demosaic,align", [("rcd", "similarity"), ("mhc", "similarity"), ("rcd", "none")])
def test_estimate_covers_the_peak_of_raw_frames(lib, monkeypatch, tmp_path, demosaic, align, method):
    from dng import write_dng_stack

    from gpustack import synth

    st = synth.make_stack(n_frames=4, shape=(240, 320), seed=4, breathing=0.02, shift=2.0, rotation=0.2)
    paths = write_dng_stack(st.frames, tmp_path)
    be, _ = _run(lib, monkeypatch, paths, demosaic=demosaic, align=align, method=method)
    fp = be.checked
    assert be.peak <= fp.peak <= 1.15 * be.peak, f"estimate {fp.peak} ({fp.phase}), tracked peak {be.peak}"


def test_estimate_scales_with_the_frame_and_names_its_phase():
    small = stack_footprint(3, 1000, 1500, check_levels(1000, 1500, None), frame_bytes=9_000_000)
    big = stack_footprint(3, 4000, 6000, check_levels(4000, 6000, None), frame_bytes=144_000_000)
    assert 15.5 * small.peak < big.peak < 16.5 * small.peak  # about linear in the pixel count
    assert 1.5 * 2**30 < big.peak < 3 * 2**30  # 24 MP colour: about 85 bytes a pixel (100 with lap0 stored)
    assert big.phase in big.phases and big.largest == 3 * 4000 * 6000
    raw = stack_footprint(3, 4000, 6000, 10, frame_bytes=48_000_000, mosaic=True)
    assert raw.largest == 5 * 4020 * 6020


@pytest.mark.parametrize("opts", [{"per_channel": True}, {"focus_channel": 2}, {"per_channel": True, "method": "pyramid"},
                                  {}])
def test_estimate_covers_the_peak_of_microscopy_stacks(lib, monkeypatch, tmp_path, opts):
    """Five channels (C > 3): per-channel states, a focus channel, the height map's confidence planes."""
    from gpustack import synth

    st = synth.make_microscopy_stack(n_planes=4, shape=(240, 320), channels=5, offsets=(0, 2, 4, 6, 8))
    path = st.write_ome(tmp_path / "five.ome.tif")
    be, result = _run(lib, monkeypatch, [path], align="none", height_map=tmp_path / "h.ome.tif", **opts)
    fp = be.checked
    assert result.image.shape == (240, 320, 5)
    assert be.peak <= fp.peak <= 1.15 * be.peak, f"estimate {fp.peak} ({fp.phase}), tracked peak {be.peak}"
