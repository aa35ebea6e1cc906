"""Per-op timings of the backends with pytest-benchmark (not part of the test suite).

    python -m pytest bench/test_bench_ops.py --benchmark-enable [--benchmark-json out.json]
    GPUSTACK_BENCH_SIZE=4000x3000 ...   (default 4000x3000, RGB)

CUDA timings synchronise after each call (the benchmark measures device time
through the host); bench/throughput.py gives the streaming rates.
"""

import os

import numpy as np
import pytest

from gpustack.backends import cuda_status, get_backend
from gpustack.color import decode_lut, encode_lut
from gpustack.stages import soft
from gpustack.stages.fuse import PyramidFusion, auto_levels
from gpustack.stages.soft import SoftFusion

W, H = (int(v) for v in os.environ.get("GPUSTACK_BENCH_SIZE", "4000x3000").split("x"))
C = 3


@pytest.fixture(scope="module", params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def be(request):
    if request.param == "cuda" and not cuda_status()[0]:
        pytest.skip("no CUDA device")
    return get_backend(request.param)


@pytest.fixture(scope="module")
def data(be):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 65536, (H, W, C), dtype=np.uint16)
    planar = be.to_device(rng.uniform(0, 1, (C, H, W)).astype(np.float32))
    planar2 = be.to_device(rng.uniform(-0.1, 0.1, (C, H, W)).astype(np.float32))
    coarse = be.to_device(rng.uniform(0, 1, (C, (H + 1) // 2, (W + 1) // 2)).astype(np.float32))
    plane = be.to_device(rng.uniform(0, 1, (H, W)).astype(np.float32))
    score1 = be.to_device(rng.uniform(0, 1, ((H + 1) // 2, (W + 1) // 2)).astype(np.float32))  # a coarser score
    return dict(frame=be.to_device(frame), planar=planar, planar2=planar2, coarse=coarse, plane=plane, score1=score1,
                out_plane=be.empty((H, W), np.float32), lut=be.to_device(decode_lut(np.uint16, "srgb")),
                elut=be.to_device(encode_lut(16, "srgb")), enc=be.empty((H, W, C), np.uint16))


def _run(benchmark, be, fn, *args):
    def call():
        fn(*args)
        be.synchronize()
    benchmark(call)


def test_convert(benchmark, be, data):
    _run(benchmark, be, be.convert, data["frame"], data["lut"], data["planar"])


def test_pyramid_reduce(benchmark, be, data):
    _run(benchmark, be, be.pyramid_reduce, data["planar"], data["coarse"])


def test_pyramid_expand_sub(benchmark, be, data):
    _run(benchmark, be, be.pyramid_expand_sub, data["planar"], data["coarse"])


def test_fuse_sqsum(benchmark, be, data):
    _run(benchmark, be, be.fuse_sqsum, data["planar"], data["out_plane"])


def test_filter_box_rows(benchmark, be, data):
    _run(benchmark, be, be.filter_box_rows, data["plane"], data["out_plane"], 2)


def test_pyramid_laplacian(benchmark, be, data):
    _run(benchmark, be, be.pyramid_laplacian, data["planar"], data["coarse"], data["planar2"])


def test_soft_fold(benchmark, be, data):
    """The soft method's fold of the finest level: its Laplacian rows, its score (squared sums, 3x3
    box, the next level's score expanded) and the per-pixel fold (weights, rescale, seven sums)."""
    c, h, w = C, H, W
    state = soft.SoftState(*(be.full((h, w), 0.0, np.float32) for _ in range(5)),
                           be.full((c, h, w), 0.0, np.float32), be.full((c, h, w), 0.0, np.float32))
    count = iter(range(10**6))
    _run(benchmark, be, lambda: be.soft_fold(data["planar"], data["coarse"], data["score1"], None, soft.RADIUS,
                                             data["out_plane"], state, next(count) % 1000, np.float32(0.01),
                                             soft.depth_shift(0.01), soft.POWER, soft.DEPTH_POWER, soft.RMIN))


def test_soft_score(benchmark, be, data):
    """The finest level's focus score of the soft method: Laplacian, squared sum, 3x3 box, plus the
    next level's score expanded."""
    _run(benchmark, be, be.soft_score, data["planar"], data["coarse"], data["score1"], soft.RADIUS, data["out_plane"])


def test_encode(benchmark, be, data):
    _run(benchmark, be, be.encode, data["planar"], data["elut"], data["enc"])


# the steps a run takes once per stack (NumPy on the CPU: backends/cpu/__init__.py)
def test_pyramid_expand_add(benchmark, be, data):
    _run(benchmark, be, be.pyramid_expand_add, data["planar2"], data["coarse"])


def test_filter_box_cols(benchmark, be, data):
    _run(benchmark, be, be.filter_box_cols, data["plane"], data["out_plane"], 2)


def test_soft_finish(benchmark, be, data):
    """With the maps; the sums divided by 1 (the same values every call: no denormals)."""
    ones = [be.full((H, W), 1.0, np.float32) for _ in range(5)]
    state = soft.SoftState(*ones, data["planar2"], data["planar"])
    depth, conf = be.empty((H, W), np.float32), be.empty((H, W), np.float32)
    _run(benchmark, be, be.soft_finish, state, np.float32(9), depth, conf)


def test_fuse_divide(benchmark, be, data):
    _run(benchmark, be, be.fuse_divide, data["planar"], np.float32(3), data["planar2"])


def test_depth_weight_ratio(benchmark, be, data):
    """The depth smoothing's first and last steps."""
    def both():
        be.depth_weight(data["plane"], data["plane"], data["out_plane"])
        be.depth_ratio(data["out_plane"], data["plane"], data["plane"], data["out_plane"])
    _run(benchmark, be, both)


@pytest.mark.parametrize("method", ["soft", "pyramid"])
def test_fold_one_frame(benchmark, be, data, method):
    """A whole frame folded into the state: convert + the method's fold (soft: four pyramid levels,
    the focus score, the weighted sums; pyramid: the whole pyramid, energies, select, depth)."""
    if method == "soft":
        fusion = SoftFusion(be, C, H, W)
    else:
        fusion = PyramidFusion(be, C, H, W, levels=auto_levels(H, W), energy_radius=2, depth_radius=4)

    count = iter(range(10**6))

    def fold():
        be.convert(data["frame"], data["lut"], fusion.input)
        fusion.fold(next(count))
        be.synchronize()
    benchmark.pedantic(fold, rounds=5, warmup_rounds=1)


SIMILARITY = np.array([[1.001, -0.0005, 2.25], [0.0005, 1.001, -1.75]])


def test_warp(benchmark, be, data):
    """Bicubic warp of a uint16 RGB frame (similarity transform): the per-frame cost of alignment."""
    _run(benchmark, be, be.warp, data["frame"], data["lut"], SIMILARITY, np.ones(C, np.float32), data["planar"])


@pytest.mark.parametrize("method", ["rcd", "mhc"])
def test_develop(benchmark, be, data, method):
    """RAW development of a uint16 Bayer mosaic (rcd or MHC demosaic, colour matrix) to planar RGB."""
    rng = np.random.default_rng(1)
    mosaic = be.to_device(rng.integers(512, 16383, (H, W), dtype=np.uint16))
    cfa = np.array([[0, 1], [1, 2]], np.int8)
    black = np.full((2, 2), 512, np.float32)
    scale = np.full((2, 2), 1 / 15871, np.float32)
    _run(benchmark, be, be.develop, mosaic, cfa, black, scale, np.eye(3, dtype=np.float32), method, data["planar"])


def test_warp_planar(benchmark, be, data):
    """Warp of a developed (planar float32) RAW frame."""
    src = be.to_device(np.ascontiguousarray(be.to_host(data["planar"])).copy())
    _run(benchmark, be, be.warp_planar, src, SIMILARITY, np.ones(C, np.float32), data["planar"])
