// warp.cu: resample a decoded frame into the reference geometry: source (H, W, C)
// uint8 / uint16 / float32, interleaved, row-major -> planar float32 (oh, ow) per
// channel, dst (C, oh, ow) row-major. Twin of gpustack/backends/cpu/warp.py.
// gs_warp_planar_f32 reads a planar float32 source (C, H, W) instead (a RAW frame
// developed on the device); the arithmetic is the same, only the addressing differs.
//
// For output pixel (row i, col j) the source position is, in float64 and in this order,
//   x = a0*j + a1*i + a2,   y = a3*j + a4*i + a5
// then fx = floor(x), tx = (float)(x - fx), x0 = (int)fx (the same for y). The sample
// is Catmull-Rom bicubic (Keys, a = -0.5) over the 4x4 neighbours of (y0, x0), indices
// clamped to the frame (not reflected), in float32:
//   r_m = wx0*s[y0-1+m, x0-1] + wx1*s[.., x0] + wx2*s[.., x0+1] + wx3*s[.., x0+2]
//   v = wy0*r_0 + wy1*r_1 + wy2*r_2 + wy3*r_3;   dst[ch, i, j] = gain[ch] * v
// where s is lut[sample] for integer samples and the sample itself for float32 ones.
// The gains travel as eight float scalars g0..g7 (at most GS_MAX_CHANNELS = 8 channels),
// the affine as six double scalars, so a warp needs no upload besides the frame.
//
// 2-D launch, one thread per output pixel: block (32, 8, 1), grid (ceil(ow / 32),
// ceil(oh / 8), 1); guard j < ow, i < oh; each thread writes the pixel's c samples.

#include "common.cuh"

#define GS_A_HALF (-0.5f)
#define GS_ONE_HALF 1.5f
#define GS_TWO_HALF 2.5f
#define GS_TWO 2.0f

static __device__ __forceinline__ float gs_decode(unsigned char v, const float* __restrict__ lut)
{
    return lut[v];
}

static __device__ __forceinline__ float gs_decode(unsigned short v, const float* __restrict__ lut)
{
    return lut[v];
}

static __device__ __forceinline__ float gs_decode(float v, const float* __restrict__ lut)
{
    return v;
}

static __device__ __forceinline__ int gs_clamp(int i, int n)
{
    return i < 0 ? 0 : (i >= n ? n - 1 : i);
}

// Catmull-Rom weights of the taps at -1, 0, 1, 2 for a fraction t in [0, 1).
static __device__ __forceinline__ void gs_cubic_weights(float t, float* w)
{
    w[0] = ((GS_A_HALF * t + GS_F1) * t + GS_A_HALF) * t;
    w[1] = (GS_ONE_HALF * t - GS_TWO_HALF) * t * t + GS_F1;
    w[2] = ((-GS_ONE_HALF * t + GS_TWO) * t + GS_HALF) * t;
    w[3] = (GS_HALF * t + GS_A_HALF) * t * t;
}

// wx0*s[row, c0] + wx1*s[row, c1] + wx2*s[row, c2] + wx3*s[row, c3] of channel ch. Sample
// (row, col, ch) is at src[row * row_step + col * col_step + ch * ch_step]: interleaved
// (w * c, c, 1), planar (w, 1, h * w).
template <typename T>
static __device__ __forceinline__ float gs_row4(const T* __restrict__ src, const float* __restrict__ lut,
                                                gs_index_t row_step, gs_index_t col_step, gs_index_t ch_step,
                                                int row, const int* cols, int ch, const float* wx)
{
    const T* line = src + (gs_index_t)row * row_step + (gs_index_t)ch * ch_step;
    return wx[0] * gs_decode(line[(gs_index_t)cols[0] * col_step], lut)
           + wx[1] * gs_decode(line[(gs_index_t)cols[1] * col_step], lut)
           + wx[2] * gs_decode(line[(gs_index_t)cols[2] * col_step], lut)
           + wx[3] * gs_decode(line[(gs_index_t)cols[3] * col_step], lut);
}

template <typename T>
static __device__ __forceinline__ void gs_warp_pixel(const T* __restrict__ src, const float* __restrict__ lut,
                                                     float* __restrict__ dst, int h, int w, int c, int oh, int ow,
                                                     double a0, double a1, double a2, double a3, double a4,
                                                     double a5,
                                                     float g0, float g1, float g2, float g3, float g4, float g5,
                                                     float g6, float g7,
                                                     bool planar)
{
    const gs_index_t row_step = planar ? (gs_index_t)w : (gs_index_t)w * c;
    const gs_index_t col_step = planar ? 1 : c;
    const gs_index_t ch_step = planar ? (gs_index_t)h * w : 1;
    const int j = gs_col();
    const int i = gs_row();
    if (j >= ow || i >= oh) {
        return;
    }
    const double x = a0 * (double)j + a1 * (double)i + a2;
    const double y = a3 * (double)j + a4 * (double)i + a5;
    const double fx = floor(x);
    const double fy = floor(y);
    const float tx = (float)(x - fx);
    const float ty = (float)(y - fy);
    // The integer corner, clamped first to [-2, n + 1] so that positions far outside (whose
    // taps all clamp to an edge anyway) cannot overflow the int conversion; indices as the twin's.
    const int x0 = (int)(fx < -2.0 ? -2.0 : (fx > (double)w + 1.0 ? (double)w + 1.0 : fx));
    const int y0 = (int)(fy < -2.0 ? -2.0 : (fy > (double)h + 1.0 ? (double)h + 1.0 : fy));
    float wx[4];
    float wy[4];
    gs_cubic_weights(tx, wx);
    gs_cubic_weights(ty, wy);
    const int cols[4] = {gs_clamp(x0 - 1, w), gs_clamp(x0, w), gs_clamp(x0 + 1, w), gs_clamp(x0 + 2, w)};
    const int r0 = gs_clamp(y0 - 1, h);
    const int r1 = gs_clamp(y0, h);
    const int r2 = gs_clamp(y0 + 1, h);
    const int r3 = gs_clamp(y0 + 2, h);
    const gs_index_t plane = (gs_index_t)oh * ow;
    const gs_index_t o = (gs_index_t)i * ow + j;
    for (int ch = 0; ch < c; ++ch) {
        const float v = wy[0] * gs_row4(src, lut, row_step, col_step, ch_step, r0, cols, ch, wx)
                        + wy[1] * gs_row4(src, lut, row_step, col_step, ch_step, r1, cols, ch, wx)
                        + wy[2] * gs_row4(src, lut, row_step, col_step, ch_step, r2, cols, ch, wx)
                        + wy[3] * gs_row4(src, lut, row_step, col_step, ch_step, r3, cols, ch, wx);
        const float gain = gs_gain(ch, g0, g1, g2, g3, g4, g5, g6, g7);
        dst[ch * plane + o] = gain * v;
    }
}

// gs_warp_lut_u8: src (h, w, c) uint8 through lut (256 float32) -> dst (c, oh, ow).
extern "C" __global__ void gs_warp_lut_u8(const unsigned char* __restrict__ src, const float* __restrict__ lut,
                                          float* __restrict__ dst, int h, int w, int c, int oh, int ow, double a0,
                                          double a1, double a2, double a3, double a4, double a5,
                                          float g0, float g1, float g2, float g3, float g4, float g5, float g6,
                                          float g7)
{
    gs_warp_pixel<unsigned char>(src, lut, dst, h, w, c, oh, ow, a0, a1, a2, a3, a4, a5, g0, g1, g2, g3, g4, g5, g6,
                         g7, false);
}

// gs_warp_lut_u16: src (h, w, c) uint16 through lut (65536 float32) -> dst (c, oh, ow).
extern "C" __global__ void gs_warp_lut_u16(const unsigned short* __restrict__ src, const float* __restrict__ lut,
                                           float* __restrict__ dst, int h, int w, int c, int oh, int ow, double a0,
                                           double a1, double a2, double a3, double a4, double a5,
                                           float g0, float g1, float g2, float g3, float g4, float g5, float g6,
                                           float g7)
{
    gs_warp_pixel<unsigned short>(src, lut, dst, h, w, c, oh, ow, a0, a1, a2, a3, a4, a5, g0, g1, g2, g3, g4, g5, g6,
                         g7, false);
}

// gs_warp_f32: src (h, w, c) float32 (already linear) -> dst (c, oh, ow).
extern "C" __global__ void gs_warp_f32(const float* __restrict__ src, float* __restrict__ dst, int h, int w, int c,
                                       int oh, int ow, double a0, double a1, double a2, double a3, double a4,
                                       double a5,
                                       float g0, float g1, float g2, float g3, float g4, float g5, float g6, float g7)
{
    gs_warp_pixel<float>(src, (const float*)0, dst, h, w, c, oh, ow, a0, a1, a2, a3, a4, a5, g0, g1, g2, g3, g4, g5,
                         g6, g7, false);
}

// gs_warp_planar_f32: src (c, h, w) planar float32 (already linear) -> dst (c, oh, ow).
extern "C" __global__ void gs_warp_planar_f32(const float* __restrict__ src, float* __restrict__ dst, int h, int w,
                                              int c, int oh, int ow, double a0, double a1, double a2, double a3,
                                              double a4, double a5,
                                              float g0, float g1, float g2, float g3, float g4, float g5, float g6,
                                              float g7)
{
    gs_warp_pixel<float>(src, (const float*)0, dst, h, w, c, oh, ow, a0, a1, a2, a3, a4, a5, g0, g1, g2, g3, g4, g5,
                         g6, g7, true);
}
