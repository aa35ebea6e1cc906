// shim.h: compile kernels/*.cu with g++ as plain C++ (DESIGN.md section 3).
//
// Force-included (g++ -include shim.h) before a .cu file: the CUDA qualifiers are
// defined away, so a __global__ kernel is an ordinary function, and the built-in
// thread coordinates are thread-local globals that gs_shim_run sets, block by block
// and thread by thread, before calling the kernel body once per thread. The kernels
// use no shared memory, no __syncthreads and no atomics, so running the threads one
// after another is exact. __restrict__ is left alone: g++ knows it.
//
// Build flags (tests/cuda_shim/__init__.py): -O2 -ffp-contract=off -fno-fast-math,
// and -msse2 -mfpmath=sse on x86-64: float32 arithmetic rounded to float32 at every
// step (no x87 excess precision), no fused multiply-add, as NVRTC with --fmad=false.

#ifndef GS_CUDA_SHIM_H
#define GS_CUDA_SHIM_H

#include <math.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

inline thread_local uint3 blockIdx;
inline thread_local uint3 threadIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

// Run body() once per thread of the launch (grid, block), x fastest.
template <typename Body>
void gs_shim_run(dim3 grid, dim3 block, Body body)
{
    gridDim = grid;
    blockDim = block;
    for (unsigned int bz = 0; bz < grid.z; ++bz)
        for (unsigned int by = 0; by < grid.y; ++by)
            for (unsigned int bx = 0; bx < grid.x; ++bx)
                for (unsigned int tz = 0; tz < block.z; ++tz)
                    for (unsigned int ty = 0; ty < block.y; ++ty)
                        for (unsigned int tx = 0; tx < block.x; ++tx) {
                            blockIdx = uint3{bx, by, bz};
                            threadIdx = uint3{tx, ty, tz};
                            body();
                        }
}

#endif  // GS_CUDA_SHIM_H
