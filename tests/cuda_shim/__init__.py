"""Run the CUDA kernels of ``kernels/*.cu`` on the CPU: g++ plus a ten-line shim.

How it works:

- ``shim.h`` (force-included with ``g++ -include``) defines ``__global__``,
  ``__device__`` and ``__forceinline__`` away and declares ``dim3`` and the
  thread-local ``blockIdx``/``threadIdx``/``blockDim``/``gridDim``;
- the ``extern "C" __global__`` signatures are read from the sources, and for
  each kernel a launcher ``gs_shim_launch_<kernel>(gx, gy, gz, bx, by, bz,
  args...)`` is generated that loops over the grid and the block, sets the
  thread indices and calls the kernel body (a plain function now);
- one translation unit per ``.cu`` file, compiled with ``-O2 -ffp-contract=off
  -fno-fast-math`` (and ``-msse2 -mfpmath=sse`` on x86-64: float32 rounding at
  every step, no x87 excess precision), linked into one shared library per index
  type and cached under a hash of every input;
- ``ShimLibrary.run(plan)`` takes a ``Launch`` from
  ``gpustack.backends.cuda._kernels`` (the same plans the GPU launches), checks
  every argument against the C signature (pointer element type = array dtype,
  ``int``/``float``/``gs_index_t`` = ``np.int32``/``np.float32``/the index type,
  no written array overlapping another) and calls the launcher through ctypes.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHIM_HEADER = Path(__file__).with_name("shim.h")

_FLAGS = ["-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-Wall"]
if platform.machine().lower() in ("x86_64", "amd64"):
    _FLAGS += ["-msse2", "-mfpmath=sse"]

_POINTER_DTYPES = {"float": np.float32, "unsigned char": np.uint8, "unsigned short": np.uint16}
_SCALAR_DTYPES = {"int": np.int32, "float": np.float32, "double": np.float64}
_INDEX_DTYPES = {"int": np.int32, "long long": np.int64}
_CTYPES = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
           np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}

_KERNEL_RE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.DOTALL)


def compiler() -> str | None:
    """The g++ the shim uses (``$CXX`` if set), or None where there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


@dataclass(frozen=True)
class Param:
    decl: str     # as written in the .cu file
    name: str
    ctype: str    # base type: float, int, unsigned char, gs_index_t...
    pointer: bool
    const: bool


def _strip_comments(text: str) -> str:
    return re.sub(r"//[^\n]*|/\*.*?\*/", " ", text, flags=re.DOTALL)


def parse_kernels(source: str) -> dict[str, list[Param]]:
    """``{kernel: [Param, ...]}`` for every ``extern "C" __global__`` function of ``source``."""
    kernels = {}
    for match in _KERNEL_RE.finditer(_strip_comments(source)):
        params = []
        for decl in (p.strip() for p in match.group(2).split(",")):
            if not decl:
                continue
            *type_words, name = decl.replace("*", " * ").split()
            pointer = "*" in type_words
            const = "const" in type_words
            base = " ".join(w for w in type_words if w not in ("*", "const", "__restrict__"))
            params.append(Param(" ".join(decl.split()), name, base, pointer, const))
        kernels[match.group(1)] = params
    return kernels


def _launcher(name: str, params: list[Param]) -> str:
    decls = "".join(f", {p.decl}" for p in params)
    names = ", ".join(p.name for p in params)
    return (f'extern "C" void gs_shim_launch_{name}(unsigned gx, unsigned gy, unsigned gz, '
            f"unsigned bx, unsigned by, unsigned bz{decls})\n"
            f"{{\n    gs_shim_run(dim3(gx, gy, gz), dim3(bx, by, bz), [&]() {{ {name}({names}); }});\n}}\n")


class ShimLibrary:
    """The kernels of one build, callable with ``run(plan)``."""

    def __init__(self, path: Path, kernels: dict[str, list[Param]], index_t: str):
        self.path = path
        self.kernels = kernels
        self.index_t = index_t
        self._lib = ctypes.CDLL(str(path))

    def _expected(self, param: Param):
        if param.pointer:
            return np.dtype(_POINTER_DTYPES[param.ctype])
        if param.ctype == "gs_index_t":
            return np.dtype(_INDEX_DTYPES[self.index_t])
        return np.dtype(_SCALAR_DTYPES[param.ctype])

    def run(self, plan, *, retype_index: bool = False) -> None:
        """Run ``plan`` (a ``_kernels.Launch``) on the CPU, in place on its NumPy arrays.

        The plan must be for this library's index type, unless ``retype_index``: then its
        ``gs_index_t`` scalars are cast to this library's (to test the wide variant on
        small arrays).
        """
        if plan.kernel not in self.kernels:
            raise KeyError(f"{plan.kernel} is not defined in kernels/*.cu")
        if plan.index_t != self.index_t and not retype_index:
            raise ValueError(f"{plan.kernel}: plan for index type {plan.index_t}, library built for {self.index_t}")
        params = self.kernels[plan.kernel]
        if len(plan.args) != len(params):
            raise TypeError(f"{plan.kernel} takes {len(params)} arguments ({', '.join(p.name for p in params)}); "
                            f"the plan passes {len(plan.args)}")
        c_args = []
        for param, arg in zip(params, plan.args):
            want = self._expected(param)
            where = f"{plan.kernel} argument {param.name} ({param.decl})"
            if param.pointer:
                if not isinstance(arg, np.ndarray):
                    raise TypeError(f"{where}: expected a NumPy array; got {type(arg).__name__}")
                if arg.dtype != want or not arg.flags.c_contiguous:
                    raise TypeError(f"{where}: expected a C-contiguous {want} array; got {arg.dtype}")
                if not param.const and not arg.flags.writeable:
                    raise ValueError(f"{where}: the kernel writes this array, which is read-only")
                c_args.append(ctypes.c_void_p(arg.ctypes.data))
            else:
                if param.ctype == "gs_index_t" and retype_index:
                    arg = want.type(arg)
                if not isinstance(arg, np.generic) or arg.dtype != want:
                    raise TypeError(f"{where}: expected np.{want.name}; got {type(arg).__name__} {arg!r}")
                c_args.append(_CTYPES[want](arg.item()))
        self._check_overlap(plan, params)
        fn = getattr(self._lib, f"gs_shim_launch_{plan.kernel}")
        grid = tuple(plan.grid) + (1,) * (3 - len(plan.grid))
        block = tuple(plan.block) + (1,) * (3 - len(plan.block))
        if 0 in grid:
            return
        fn.restype = None
        fn(*(ctypes.c_uint(v) for v in grid + block), *c_args)

    @staticmethod
    def _check_overlap(plan, params: list[Param]) -> None:
        """__restrict__ pointers: no array the kernel writes may share memory with another."""
        arrays = [(p, a) for p, a in zip(params, plan.args) if p.pointer]
        for n, (p, a) in enumerate(arrays):
            for q, b in arrays[n + 1:]:
                if (not p.const or not q.const) and np.shares_memory(a, b):
                    raise ValueError(f"{plan.kernel}: {p.name} and {q.name} overlap; the kernel's __restrict__ "
                                     f"pointers must not alias a written array")


def _run_quiet(cmd):
    return subprocess.run(cmd, check=False, capture_output=True, text=True)


def _digest(kdir: Path, index_t: str, cxx: str) -> str:
    h = hashlib.sha256()
    version = _run_quiet([cxx, "--version"]).stdout
    for part in (version, index_t, " ".join(_FLAGS), SHIM_HEADER.read_text(), Path(__file__).read_text()):
        h.update(part.encode() + b"\0")
    for src in sorted(list(kdir.glob("*.cu")) + list(kdir.glob("*.cuh"))):
        h.update(src.name.encode() + b"\0" + src.read_bytes())
    return h.hexdigest()[:20]


def build(kdir: Path, cache_dir: Path, index_t: str = "int") -> ShimLibrary:
    """Compile every ``kdir/*.cu`` into one shared library (reused while no input changes)."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("g++ not found: the CUDA emulation needs a C++ compiler")
    kdir = Path(kdir)
    sources = {src.stem: src.read_text() for src in sorted(kdir.glob("*.cu"))}
    kernels = {}
    for text in sources.values():
        kernels.update(parse_kernels(text))
    lib_path = Path(cache_dir) / f"gs_shim_{_digest(kdir, index_t, cxx)}.so"
    if not lib_path.exists():
        lib_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=lib_path.parent) as tmp:
            tmp = Path(tmp)
            base = [cxx, *_FLAGS, "-include", str(SHIM_HEADER), f"-I{kdir}", f"-DGS_INDEX_T={index_t}"]
            jobs = []
            for family, text in sources.items():
                unit = tmp / f"{family}_shim.cpp"
                launchers = "\n".join(_launcher(k, p) for k, p in parse_kernels(text).items())
                unit.write_text(f'#include "{family}.cu"\n\n{launchers}')
                jobs.append(base + ["-c", str(unit), "-o", str(unit.with_suffix(".o"))])
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                results = list(pool.map(_run_quiet, jobs))
            for cmd, res in zip(jobs, results):
                if res.returncode != 0:
                    raise RuntimeError(f"g++ failed on {cmd[-3]}:\n{res.stderr}")
            tmp_lib = tmp / "lib.so"
            res = _run_quiet([cxx, "-shared", "-o", str(tmp_lib), *(str(p) for p in tmp.glob("*.o"))])
            if res.returncode != 0:
                raise RuntimeError(f"g++ failed to link the shim library:\n{res.stderr}")
            os.replace(tmp_lib, lib_path)
    return ShimLibrary(lib_path, kernels, index_t)


class DeviceArray:
    """A stand-in for ``cupy.ndarray`` in the emulation: NumPy memory that, like CuPy, refuses to
    become a NumPy array implicitly (``np.asarray`` raises ``TypeError``), so code that would
    read device memory as if it were on the host fails here too."""

    __slots__ = ("host",)

    def __init__(self, host: np.ndarray):
        self.host = host

    shape = property(lambda self: self.host.shape)
    dtype = property(lambda self: self.host.dtype)
    size = property(lambda self: self.host.size)
    nbytes = property(lambda self: self.host.nbytes)
    ndim = property(lambda self: self.host.ndim)
    flags = property(lambda self: self.host.flags)

    def __len__(self):
        return len(self.host)

    def __getitem__(self, key):
        return DeviceArray(self.host[key])

    def reshape(self, *shape):
        return DeviceArray(self.host.reshape(*shape))

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed (emulated device array); "
                        "use to_host")


def _host(a):
    return a.host if isinstance(a, DeviceArray) else a


def emulated_backend(lib: ShimLibrary | None, *, retype_index: bool = False):
    """A ``CudaBackend`` whose kernels run through ``lib`` on host memory (``lib`` None: the
    launches are only recorded, nothing is computed; no compiler is needed).

    Every op goes through the real ``CudaBackend`` method (its dispatch, the
    ``_kernels.plan_*`` wrappers and the copy plans); only ``_run`` (the launch),
    ``_copy`` (device copies) and the memory ops differ: memory is NumPy wrapped in
    ``DeviceArray`` (which refuses implicit conversion, as CuPy does), ``empty``
    filled with all-ones bits (NaN for floats) so that a sample no kernel writes
    shows. ``launched`` lists the kernels run; ``plans`` the launches recorded (``lib`` None).
    """
    import dataclasses

    from gpustack.backends.cuda import CudaBackend

    def wrap(a):
        return DeviceArray(a)

    class EmulatedCudaBackend(CudaBackend):
        name = "cuda-emulated"
        xp = None  # the stages and the pipeline must not need an array module

        def __init__(self):  # no CuPy, no device
            self.device_name = ("launches recorded, not run" if lib is None else
                                f"g++ emulation of kernels/*.cu ({lib.path.name}, index type {lib.index_t})")
            self.launched = []
            self.plans = []
            self._sync = False
            self._what = "this stack"

        def _run(self, plan):
            self.launched.append(plan.kernel)
            if lib is None:  # record (the plans keep their arrays alive), do not run
                self.plans.append(plan)
                return
            lib.run(dataclasses.replace(plan, args=tuple(_host(a) for a in plan.args)), retype_index=retype_index)

        def _copy(self, plans):
            for p in plans:
                dst = _host(p.dst).reshape(-1).view(np.uint8)
                src = _host(p.src).reshape(-1).view(np.uint8)
                for i in range(p.rows):
                    d, s = p.dst_offset + i * p.dst_pitch, p.src_offset + i * p.src_pitch
                    dst[d:d + p.width] = src[s:s + p.width]

        @staticmethod
        def empty(shape, dtype):
            out = np.empty(shape, dtype)
            out.view(np.uint8).fill(0xFF)
            return wrap(out)

        @staticmethod
        def full(shape, value, dtype):
            return wrap(np.full(shape, value, dtype))

        def check_memory(self, footprint, what):  # host memory: nothing to check
            self._what = what
            return footprint.peak

        @staticmethod
        def host_buffer(shape, dtype):
            return np.empty(shape, dtype)

        @staticmethod
        def to_device(host_array):
            if isinstance(host_array, DeviceArray):
                return wrap(np.array(host_array.host, order="C", copy=True))
            return wrap(np.array(host_array, order="C", copy=True))

        @staticmethod
        def to_host(array):
            return np.array(_host(array), copy=True)

        @staticmethod
        def synchronize():
            return None

    return EmulatedCudaBackend()
