// common.cuh: what every gpustack kernel shares -- the index type, thread indexing,
// the float32 constants and the border rule. Twin of gpustack/backends/cpu/_common.py.
//
// Parity contract (DESIGN.md section 3): float32 only, compiled with --fmad=false
// (NVRTC, nvcc) or -ffp-contract=off (g++ through tests/cuda_shim), every sum
// written left to right in the same order as the Numba twin, no transcendental
// functions, no atomics, no shared memory, no reductions across threads.
//
// This header includes nothing, so that NVRTC needs no system headers.

#ifndef GS_COMMON_CUH
#define GS_COMMON_CUH

// Flat element indices. The Python wrapper prepends "#define GS_INDEX_T long long"
// when an array has 2**31 elements or more; rows, columns and channels are int.
#ifndef GS_INDEX_T
#define GS_INDEX_T int
#endif
typedef GS_INDEX_T gs_index_t;

// float32 constants (the Numba twins' np.float32 module globals)
#define GS_F0 0.0f
#define GS_F1 1.0f
#define GS_HALF 0.5f
#define GS_NEG_HALF (-0.5f)
// 5-tap binomial kernel [1, 4, 6, 4, 1] / 16 (pyramid reduce)
#define GS_W0 0.0625f
#define GS_W1 0.25f
#define GS_W2 0.375f
// its expand counterpart: even output samples (1, 6, 1) / 8, odd ones (1, 1) / 2
#define GS_E0 0.125f
#define GS_E1 0.75f

// Channels a frame may have where per-channel gains travel as float scalars (convert.cu,
// warp.cu: g0..g7; microscopy stacks of up to 8 named channels).
#define GS_MAX_CHANNELS 8

// The gain of channel ch (0 <= ch < GS_MAX_CHANNELS) among the eight scalars: a select, no
// arithmetic, so the twin's gains[ch] is the same value.
static __device__ __forceinline__ float gs_gain(int ch, float g0, float g1, float g2, float g3, float g4, float g5,
                                                float g6, float g7)
{
    switch (ch) {
    case 0: return g0;
    case 1: return g1;
    case 2: return g2;
    case 3: return g3;
    case 4: return g4;
    case 5: return g5;
    case 6: return g6;
    default: return g7;
    }
}

// Column of a 2-D launch (grid x covers columns, block (32, 8, 1)).
static __device__ __forceinline__ int gs_col(void)
{
    return (int)(blockIdx.x * blockDim.x + threadIdx.x);
}

// Row of a 2-D launch (grid y covers rows).
static __device__ __forceinline__ int gs_row(void)
{
    return (int)(blockIdx.y * blockDim.y + threadIdx.y);
}

// Element of a 1-D launch (block 128), computed in the index type.
static __device__ __forceinline__ gs_index_t gs_flat(void)
{
    return (gs_index_t)blockIdx.x * (gs_index_t)blockDim.x + (gs_index_t)threadIdx.x;
}

// Border rule of every kernel (reflect101, OpenCV's BORDER_REFLECT_101): mirror
// about the edge samples, the edge not repeated (-1 -> 1, n -> n - 2), periodic
// for any offset; n == 1 maps everything to 0. Twin of _common.reflect.
static __device__ __forceinline__ int gs_reflect(int i, int n)
{
    if (i >= 0 && i < n) {
        return i;
    }
    if (n == 1) {
        return 0;
    }
    const int m = 2 * (n - 1);
    i = (i < 0 ? -i : i) % m;
    if (i >= n) {
        i = m - i;
    }
    return i;
}

// Box sum along row i of an (h, w) plane at column j: 0.0f + p[j-r] + ... + p[j+r],
// added from the lowest offset up, reflect101 columns. Twin of filter.box_row.
static __device__ __forceinline__ float gs_box_row(const float* __restrict__ plane, int w, int i, int j, int r)
{
    const float* row = plane + (gs_index_t)i * w;
    float s = GS_F0;
    for (int d = -r; d <= r; ++d) {
        s = s + row[gs_reflect(j + d, w)];
    }
    return s;
}

// Box sum down column j of an (h, w) plane at row i: 0.0f + p[i-r, j] + ... + p[i+r, j],
// added from the lowest offset up, reflect101 rows. Twin of filter.box_col.
static __device__ __forceinline__ float gs_box_col(const float* __restrict__ plane, int h, int w, int i, int j, int r)
{
    float s = GS_F0;
    for (int d = -r; d <= r; ++d) {
        s = s + plane[(gs_index_t)gs_reflect(i + d, h) * w + j];
    }
    return s;
}

#endif  // GS_COMMON_CUH
