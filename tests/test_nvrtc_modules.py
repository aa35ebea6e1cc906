"""The gate that stands in for a GPU in CI: every kernels/*.cu module compiled by NVRTC through the
backend's own code path (``_kernels.nvrtc_job`` and ``compile_job``, the exact options), for the
H100/H200's sm_90 and a newer architecture, in both index types, and checked as the driver will
see it:

- the cubin is whole (exactly as long as its ELF header declares: CuPy's ``getCUBIN`` drops the
  last byte, and a short image is what the driver would be handed);
- every kernel the launch plans name is in it, and nothing else;
- each kernel's parameters, as the cubin declares them to the driver, have the count and the
  sizes the plans pass (plans recorded from every op case of ``cuda_cases``);
- the PTX has no fused multiply-add, no flush-to-zero, no approximate division, and every float
  add/sub/mul/div rounds to nearest (``.rn``, which ptxas may not contract).

Needs NVRTC (``cupy-cuda13x`` and ``nvidia-cuda-nvrtc``, in the test extra on Linux), not a GPU.
"""

import re
from concurrent.futures import ThreadPoolExecutor

import cuda_shim
import numpy as np
import pytest
from conftest import toolchain_missing
from cuda_cases import CASES, run_op

from gpustack.backends.cuda import _elf
from gpustack.backends.cuda import _kernels as K
from gpustack.errors import BackendUnavailableError

ARCHS = (90, 100)  # H100/H200, and the next architecture (Blackwell)
POINTER = 8


@pytest.fixture(scope="module")
def nvrtc():
    try:
        return K._nvrtc()
    except BackendUnavailableError as exc:
        toolchain_missing(f"NVRTC not available: {exc}")


@pytest.fixture(scope="module")
def images(nvrtc):
    """{(family, index_t, arch): (cubin, ptx)}, compiled through the backend's path, several at once."""
    jobs = [(f, i, a) for f in K.FAMILIES for i in K.INDEX_TYPES for a in ARCHS]

    def build(job):
        family, index_t, arch = job
        return (K.compile_job(K.nvrtc_job(family, index_t, arch)),
                K.compile_job(K.nvrtc_job(family, index_t, arch, kind="ptx")).decode())

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(jobs, pool.map(build, jobs)))


@pytest.fixture(scope="module")
def plans():
    """Every launch plan of every op case (recorded, not run), by kernel."""
    be = cuda_shim.emulated_backend(None)
    for name, case in CASES.items():
        for shape in [(3, 5, 7), (1, 2, 2)]:
            run_op(be, case(np.random.default_rng(0), shape, 1))
    by_kernel = {}
    for plan in be.plans:
        by_kernel.setdefault(plan.kernel, []).append(plan)
    return by_kernel


def _signatures():
    out = {}
    for src in K.kernel_dir().glob("*.cu"):
        out.update(cuda_shim.parse_kernels(src.read_text()))
    return out


def _arg_size(arg) -> int:
    return arg.dtype.itemsize if isinstance(arg, np.generic) else POINTER


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("index_t", K.INDEX_TYPES)
@pytest.mark.parametrize("family", sorted(K.FAMILIES))
def test_cubin_is_whole_and_declares_what_the_plans_pass(images, plans, family, index_t, arch):
    cubin, _ = images[family, index_t, arch]
    assert len(cubin) == _elf.image_size(cubin), f"{family}.cu ({index_t}, sm_{arch}): the cubin is not whole"
    declared = _elf.kernel_params(cubin)
    assert set(declared) == set(K.FAMILIES[family])
    signatures = _signatures()
    for kernel in K.FAMILIES[family]:
        assert kernel in plans, f"no op case launches {kernel}"
        wide = [p.ctype == "gs_index_t" for p in signatures[kernel]]
        for plan in plans[kernel]:
            passed = [_arg_size(a) for a in plan.args]
            if index_t == "long long":  # the plans were made for int: gs_index_t widens to 8 bytes
                passed = [8 if w else size for w, size in zip(wide, passed, strict=True)]
            assert passed == declared[kernel], f"{kernel} ({index_t}, sm_{arch}): the plan passes {passed}, " \
                                               f"the cubin declares {declared[kernel]}"


_FLOAT_OP = re.compile(r"^\s*(add|sub|mul|div)((?:\.\w+)*)\.f(32|64)\b", re.MULTILINE)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("index_t", K.INDEX_TYPES)
@pytest.mark.parametrize("family", sorted(K.FAMILIES))
def test_ptx_keeps_ieee_float32(images, family, index_t, arch):
    _, ptx = images[family, index_t, arch]
    for name in K.FAMILIES[family]:
        assert f".entry {name}(" in ptx
    for bad in ("fma.rn.f", "mad.f", ".ftz", "div.approx", "div.full", "rcp.approx", "sqrt.approx"):
        assert bad not in ptx, f"{family}.cu ({index_t}, compute_{arch}): PTX contains {bad}"
    for op, modifiers, _bits in _FLOAT_OP.findall(ptx):
        assert ".rn" in modifiers, f"{family}.cu: {op}{modifiers} does not round to nearest"


def test_nvrtc_options_are_the_parity_contract(nvrtc):
    job = K.nvrtc_job("filter", "int", 90)
    assert {"--fmad=false", "--ftz=false", "--prec-div=true"} <= set(job.options)
    assert not any("ftz=true" in o or "use_fast_math" in o for o in job.options)
    assert job.options[-1] == "-arch=sm_90" and job.kind == "cubin"
    assert K.nvrtc_job("filter", "int", 10_000).kind == "ptx"  # an architecture NVRTC does not know yet


def test_cubin_comes_back_whole_although_cupy_drops_its_last_byte(nvrtc):
    """The finding this gate was written for: CuPy's getCUBIN returns the image one byte short."""
    job = K.nvrtc_job("encode", "int", 90)
    prog = nvrtc.createProgram(job.code, "encode.cu", [], [])
    try:
        nvrtc.compileProgram(prog, list(job.options))
        raw = nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
    whole = K.compile_job(job)
    assert len(whole) == _elf.image_size(whole) and whole.startswith(raw) and len(whole) - len(raw) <= 1
    with pytest.raises(_elf.ElfError):
        _elf.check_whole(whole[:-1])


def test_kernel_cache_stores_whole_images_and_rejects_damaged_ones(nvrtc, tmp_path, monkeypatch):
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path))
    job = K.nvrtc_job("fuse", "int", 90)
    image = K.module_image(job)
    (cached,) = tmp_path.glob("gpustack_fuse_*.cubin")
    assert cached.read_bytes() == image and len(image) == _elf.image_size(image)
    compiled = []
    real = K.compile_job
    monkeypatch.setattr(K, "compile_job", lambda j: compiled.append(j) or real(j))
    assert K.module_image(job) == image and compiled == []  # read from the cache
    cached.write_bytes(image[:-1])  # what format 1 stored
    assert K.module_image(job) == image and len(compiled) == 1  # damaged: compiled again, and stored whole
    assert cached.read_bytes() == image
    assert f"format {K.CACHE_FORMAT}" and K.CACHE_FORMAT >= 2


def test_kernel_cache_that_cannot_be_written_is_skipped(nvrtc, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CUPY_CACHE_DIR", str(blocker / "cache"))
    image = K.module_image(K.nvrtc_job("filter", "int", 90))
    assert len(image) == _elf.image_size(image)
    assert list(tmp_path.iterdir()) == [blocker]  # no temporary left behind
