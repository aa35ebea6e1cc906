// encode.cu: planar linear float32 (C, H, W) -> interleaved integer samples (H, W, C)
// through a table, row-major. Twin of gpustack/backends/cpu/encode.py.
//
// Index rule, all in float32: idx = 0 for v <= 0 or NaN, n_lut - 1 for v >= 1, else
// (int)(v * (float)(n_lut - 1) + 0.5f) (truncation; v * scale is rounded to float32
// before the 0.5f is added: --fmad=false). 1-D launch, one thread per pixel p = i * w + j
// over n = h * w pixels (block 128); each thread writes the pixel's c samples. Guard p < n.

#include "common.cuh"

// Table index of linear value v for a table of n_lut entries (scale = n_lut - 1).
static __device__ __forceinline__ int gs_encode_index(float v, float scale, int n_lut)
{
    if (v > GS_F0) {
        if (v < GS_F1) {
            return (int)(v * scale + GS_HALF);
        }
        return n_lut - 1;
    }
    return 0;
}

// dst[p, ch] = lut[gs_encode_index(src[ch, p])] for every channel of pixel p.
template <typename T>
static __device__ __forceinline__ void gs_encode_pixel(const float* __restrict__ src, const T* __restrict__ lut,
                                                       T* __restrict__ dst, gs_index_t n, int c, int n_lut)
{
    const gs_index_t p = gs_flat();
    if (p >= n) {
        return;
    }
    const float scale = (float)(n_lut - 1);
    for (int ch = 0; ch < c; ++ch) {
        dst[p * c + ch] = lut[gs_encode_index(src[ch * n + p], scale, n_lut)];
    }
}

// gs_encode_lut_u8: src (C, H, W) float32 planar; lut uint8 (n_lut entries);
// dst (H, W, C) uint8 interleaved.
extern "C" __global__ void gs_encode_lut_u8(const float* __restrict__ src, const unsigned char* __restrict__ lut,
                                            unsigned char* __restrict__ dst, gs_index_t n, int c, int n_lut)
{
    gs_encode_pixel<unsigned char>(src, lut, dst, n, c, n_lut);
}

// gs_encode_lut_u16: src (C, H, W) float32 planar; lut uint16 (n_lut entries);
// dst (H, W, C) uint16 interleaved.
extern "C" __global__ void gs_encode_lut_u16(const float* __restrict__ src, const unsigned short* __restrict__ lut,
                                             unsigned short* __restrict__ dst, gs_index_t n, int c, int n_lut)
{
    gs_encode_pixel<unsigned short>(src, lut, dst, n, c, n_lut);
}
