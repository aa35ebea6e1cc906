// convert.cu: input frames (H, W, C) uint8 / uint16 / float32, interleaved, row-major
// -> planar linear float32 (C, H, W), row-major. Twin of gpustack/backends/cpu/convert.py.
//
// 1-D launch, one thread per pixel p = i * w + j (block 128, grid ceil(h * w / 128));
// each thread writes the pixel's c samples. Guard: p < h * w. One multiply: the
// channel's brightness gain (g0..g7, float scalars, one per channel up to
// GS_MAX_CHANNELS = 8; 1 when the frame is not gained, which leaves every value as it is,
// and for unused channels) times a table lookup by the sample value, or times the float32
// sample (already linear). The result equals an identity warp's (warp.cu).

#include "common.cuh"

// dst[ch, p] = gain[ch] * lut[src[p, ch]] for every channel of pixel p.
template <typename T>
static __device__ __forceinline__ void gs_convert_lut_pixel(const T* __restrict__ src, const float* __restrict__ lut,
                                                            float* __restrict__ dst, int h, int w, int c,
                                                            float g0, float g1, float g2, float g3, float g4,
                                                            float g5, float g6, float g7)
{
    const gs_index_t hw = (gs_index_t)h * w;
    const gs_index_t p = gs_flat();
    if (p >= hw) {
        return;
    }
    for (int ch = 0; ch < c; ++ch) {
        dst[ch * hw + p] = gs_gain(ch, g0, g1, g2, g3, g4, g5, g6, g7) * lut[src[p * c + ch]];
    }
}

// gs_convert_lut_u8: src (H, W, C) uint8 interleaved; lut float32, 256 entries (every
// uint8 value); dst (C, H, W) float32 planar. dst[ch, i, j] = g[ch] * lut[src[i, j, ch]].
extern "C" __global__ void gs_convert_lut_u8(const unsigned char* __restrict__ src, const float* __restrict__ lut,
                                             float* __restrict__ dst, int h, int w, int c,
                                             float g0, float g1, float g2, float g3, float g4, float g5, float g6,
                                             float g7)
{
    gs_convert_lut_pixel<unsigned char>(src, lut, dst, h, w, c, g0, g1, g2, g3, g4, g5, g6, g7);
}

// gs_convert_lut_u16: src (H, W, C) uint16 interleaved; lut float32, 65536 entries
// (every uint16 value); dst (C, H, W) float32 planar. dst[ch, i, j] = g[ch] * lut[src[i, j, ch]].
extern "C" __global__ void gs_convert_lut_u16(const unsigned short* __restrict__ src, const float* __restrict__ lut,
                                              float* __restrict__ dst, int h, int w, int c,
                                              float g0, float g1, float g2, float g3, float g4, float g5, float g6,
                                              float g7)
{
    gs_convert_lut_pixel<unsigned short>(src, lut, dst, h, w, c, g0, g1, g2, g3, g4, g5, g6, g7);
}

// gs_convert_f32: src (H, W, C) float32 interleaved; dst (C, H, W) float32 planar.
// dst[ch, i, j] = g[ch] * src[i, j, ch] (a transpose and the gain).
extern "C" __global__ void gs_convert_f32(const float* __restrict__ src, float* __restrict__ dst, int h, int w, int c,

                                          float g0, float g1, float g2, float g3, float g4, float g5, float g6,
                                          float g7)
{
    const gs_index_t hw = (gs_index_t)h * w;
    const gs_index_t p = gs_flat();
    if (p >= hw) {
        return;
    }
    for (int ch = 0; ch < c; ++ch) {
        dst[ch * hw + p] = gs_gain(ch, g0, g1, g2, g3, g4, g5, g6, g7) * src[p * c + ch];
    }
}
