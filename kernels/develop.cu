// develop.cu: RAW development of a Bayer mosaic: uint16 (H, W) row-major -> planar
// float32 (3, H, W) linear RGB, row-major. Twin of gpustack/backends/cpu/develop.py.
//
// Per mosaic sample s at (row y, col x), with p = (y & 1, x & 1) its CFA position:
//   v = ((float)s - black[p]) * scale[p];   v < 0 -> 0;   v > 1 -> 1
// (black subtracted, white level and white balance in one factor: scale[p] =
// wb[colour of p] / (white - black[p]), computed on the host; clipped to [0, 1] like
// LibRaw, so that a saturated site stays white after the white balance.)
// Then the demosaic, per output pixel (i, j) from the normalised samples v(di, dj) at
// (i + di, j + dj) around it, c = v(0, 0), its site: R (the red sample's parity
// (red_row, red_col)), B (both parities differ), G in a red row, G in a blue row.
//   R site: r = c, g = CROSS, b = DIAG        B site: b = c, g = CROSS, r = DIAG
//   G, red row: g = c, r = HORIZ, b = VERT    G, blue row: g = c, r = VERT, b = HORIZ
// gs_develop_bilinear (plain averages):
//   CROSS = (((v(-1,0) + v(0,-1)) + v(0,1)) + v(1,0)) * 0.25
//   DIAG  = (((v(-1,-1) + v(-1,1)) + v(1,-1)) + v(1,1)) * 0.25
//   HORIZ = (v(0,-1) + v(0,1)) * 0.5        VERT = (v(-1,0) + v(1,0)) * 0.5
// gs_develop_mhc (Malvar, He, Cutler 2004, 5x5 gradient-corrected linear filters):
//   a1 = ((v(-1,0) + v(0,-1)) + v(0,1)) + v(1,0)     a2 = ((v(-2,0) + v(0,-2)) + v(0,2)) + v(2,0)
//   d1 = ((v(-1,-1) + v(-1,1)) + v(1,-1)) + v(1,1)
//   h1 = v(0,-1) + v(0,1)   h2 = v(0,-2) + v(0,2)   u1 = v(-1,0) + v(1,0)   u2 = v(-2,0) + v(2,0)
//   CROSS = ((4*c + 2*a1) - a2) * 0.125
//   DIAG  = ((6*c + 2*d1) - 1.5*a2) * 0.125
//   HORIZ = ((((5*c + 4*h1) - d1) - h2) + 0.5*u2) * 0.125
//   VERT  = ((((5*c + 4*u1) - d1) - u2) + 0.5*h2) * 0.125
// Colour: out[k] = (r*m[k][0] + g*m[k][1]) + b*m[k][2], not clipped (the finish clips).
//
// Borders: reflect101 (gs_reflect) on the mosaic grid. It mirrors about the edge
// sample (i -> -i, n - 1 + d -> n - 1 - d), a displacement of an even number of
// samples, so a red site maps to a red site: the CFA phase is kept for any H, W >= 2
// (the wrapper requires it; a mosaic one sample wide lacks a colour).
//
// 2-D launch, one thread per output pixel: block (32, 8, 1), grid (ceil(W / 32),
// ceil(H / 8), 1); guard j < w, i < h; each thread gathers its 5x5 neighbourhood
// from the mosaic (normalising every sample it reads; no shared memory) and writes
// the pixel's three samples. The 17 parameters travel as float scalars (black and
// scale per 2x2 position, row-major; the 3x3 matrix, row-major), so a development
// needs no upload besides the mosaic.

#include "common.cuh"

#define GS_DEV_QUARTER 0.25f
#define GS_DEV_EIGHTH 0.125f
#define GS_DEV_ONE_HALF 1.5f
#define GS_DEV_TWO 2.0f
#define GS_DEV_FOUR 4.0f
#define GS_DEV_FIVE 5.0f
#define GS_DEV_SIX 6.0f

// What a thread needs to read normalised samples around its pixel: the mosaic, the
// reflected rows i-2..i+2 and columns j-2..j+2, and the per-position parameters.
struct gs_develop_ctx {
    const unsigned short* mosaic;
    int w;
    int rows[5];
    int cols[5];
    float b00, b01, b10, b11;  // black per 2x2 position (row parity, column parity)
    float s00, s01, s10, s11;  // scale per 2x2 position
};

// The value of a 2x2 position (py, px) (selects: no local-memory array indexed at run time).
static __device__ __forceinline__ float gs_develop_pick(int py, int px, float v00, float v01, float v10, float v11)
{
    return py ? (px ? v11 : v10) : (px ? v01 : v00);
}

// The normalised sample at (i + di, j + dj), di, dj in [-2, 2].
static __device__ __forceinline__ float gs_develop_tap(const gs_develop_ctx& x, int di, int dj)
{
    const int y = x.rows[di + 2];
    const int c = x.cols[dj + 2];
    const int py = y & 1;
    const int px = c & 1;
    const float black = gs_develop_pick(py, px, x.b00, x.b01, x.b10, x.b11);
    const float scale = gs_develop_pick(py, px, x.s00, x.s01, x.s10, x.s11);
    float v = ((float)x.mosaic[(gs_index_t)y * x.w + c] - black) * scale;
    if (v < GS_F0) {
        v = GS_F0;
    }
    if (v > GS_F1) {
        v = GS_F1;
    }
    return v;
}

// v(-1,0) + v(0,-1) + v(0,1) + v(1,0), left to right
static __device__ __forceinline__ float gs_develop_a1(const gs_develop_ctx& x)
{
    return ((gs_develop_tap(x, -1, 0) + gs_develop_tap(x, 0, -1)) + gs_develop_tap(x, 0, 1)) + gs_develop_tap(x, 1, 0);
}

// v(-2,0) + v(0,-2) + v(0,2) + v(2,0)
static __device__ __forceinline__ float gs_develop_a2(const gs_develop_ctx& x)
{
    return ((gs_develop_tap(x, -2, 0) + gs_develop_tap(x, 0, -2)) + gs_develop_tap(x, 0, 2)) + gs_develop_tap(x, 2, 0);
}

// v(-1,-1) + v(-1,1) + v(1,-1) + v(1,1)
static __device__ __forceinline__ float gs_develop_d1(const gs_develop_ctx& x)
{
    return ((gs_develop_tap(x, -1, -1) + gs_develop_tap(x, -1, 1)) + gs_develop_tap(x, 1, -1))
           + gs_develop_tap(x, 1, 1);
}

// The four interpolators of the header, bilinear (MHC = false) or Malvar-He-Cutler.
template <bool MHC>
static __device__ __forceinline__ float gs_develop_cross(const gs_develop_ctx& x, float c)
{
    if (MHC) {
        return ((GS_DEV_FOUR * c + GS_DEV_TWO * gs_develop_a1(x)) - gs_develop_a2(x)) * GS_DEV_EIGHTH;
    }
    return gs_develop_a1(x) * GS_DEV_QUARTER;
}

template <bool MHC>
static __device__ __forceinline__ float gs_develop_diag(const gs_develop_ctx& x, float c)
{
    if (MHC) {
        return ((GS_DEV_SIX * c + GS_DEV_TWO * gs_develop_d1(x)) - GS_DEV_ONE_HALF * gs_develop_a2(x)) * GS_DEV_EIGHTH;
    }
    return gs_develop_d1(x) * GS_DEV_QUARTER;
}

template <bool MHC>
static __device__ __forceinline__ float gs_develop_horiz(const gs_develop_ctx& x, float c)
{
    const float h1 = gs_develop_tap(x, 0, -1) + gs_develop_tap(x, 0, 1);
    if (MHC) {
        const float h2 = gs_develop_tap(x, 0, -2) + gs_develop_tap(x, 0, 2);
        const float u2 = gs_develop_tap(x, -2, 0) + gs_develop_tap(x, 2, 0);
        return ((((GS_DEV_FIVE * c + GS_DEV_FOUR * h1) - gs_develop_d1(x)) - h2) + GS_HALF * u2) * GS_DEV_EIGHTH;
    }
    return h1 * GS_HALF;
}

template <bool MHC>
static __device__ __forceinline__ float gs_develop_vert(const gs_develop_ctx& x, float c)
{
    const float u1 = gs_develop_tap(x, -1, 0) + gs_develop_tap(x, 1, 0);
    if (MHC) {
        const float u2 = gs_develop_tap(x, -2, 0) + gs_develop_tap(x, 2, 0);
        const float h2 = gs_develop_tap(x, 0, -2) + gs_develop_tap(x, 0, 2);
        return ((((GS_DEV_FIVE * c + GS_DEV_FOUR * u1) - gs_develop_d1(x)) - u2) + GS_HALF * h2) * GS_DEV_EIGHTH;
    }
    return u1 * GS_HALF;
}

template <bool MHC>
static __device__ __forceinline__ void gs_develop_pixel(const unsigned short* __restrict__ mosaic,
                                                        float* __restrict__ dst, int h, int w, int red_row,
                                                        int red_col, float b00, float b01, float b10, float b11,
                                                        float s00, float s01, float s10, float s11, float m00,
                                                        float m01, float m02, float m10, float m11, float m12,
                                                        float m20, float m21, float m22)
{
    const int j = gs_col();
    const int i = gs_row();
    if (j >= w || i >= h) {
        return;
    }
    gs_develop_ctx x;
    x.mosaic = mosaic;
    x.w = w;
    for (int d = 0; d < 5; ++d) {
        x.rows[d] = gs_reflect(i + d - 2, h);
        x.cols[d] = gs_reflect(j + d - 2, w);
    }
    x.b00 = b00;
    x.b01 = b01;
    x.b10 = b10;
    x.b11 = b11;
    x.s00 = s00;
    x.s01 = s01;
    x.s10 = s10;
    x.s11 = s11;
    const float c = gs_develop_tap(x, 0, 0);
    const bool red_row_here = (i & 1) == red_row;
    const bool red_col_here = (j & 1) == red_col;
    float r, g, b;
    if (red_row_here && red_col_here) {  // R site
        r = c;
        g = gs_develop_cross<MHC>(x, c);
        b = gs_develop_diag<MHC>(x, c);
    } else if (!red_row_here && !red_col_here) {  // B site
        b = c;
        g = gs_develop_cross<MHC>(x, c);
        r = gs_develop_diag<MHC>(x, c);
    } else if (red_row_here) {  // G site in a red row: red left and right, blue above and below
        g = c;
        r = gs_develop_horiz<MHC>(x, c);
        b = gs_develop_vert<MHC>(x, c);
    } else {  // G site in a blue row
        g = c;
        r = gs_develop_vert<MHC>(x, c);
        b = gs_develop_horiz<MHC>(x, c);
    }
    const gs_index_t hw = (gs_index_t)h * w;
    const gs_index_t p = (gs_index_t)i * w + j;
    dst[p] = r * m00 + g * m01 + b * m02;
    dst[hw + p] = r * m10 + g * m11 + b * m12;
    dst[2 * hw + p] = r * m20 + g * m21 + b * m22;
}

// gs_develop_bilinear: mosaic (H, W) uint16, dst (3, H, W) float32; red_row, red_col the
// parity of the red sites; b.., s.. black and scale per 2x2 position (row, col); m.. the
// 3x3 camera -> output matrix, row-major. Bilinear demosaic (header).
extern "C" __global__ void gs_develop_bilinear(const unsigned short* __restrict__ mosaic, float* __restrict__ dst,
                                               int h, int w, int red_row, int red_col, float b00, float b01,
                                               float b10, float b11, float s00, float s01, float s10, float s11,
                                               float m00, float m01, float m02, float m10, float m11, float m12,
                                               float m20, float m21, float m22)
{
    gs_develop_pixel<false>(mosaic, dst, h, w, red_row, red_col, b00, b01, b10, b11, s00, s01, s10, s11, m00, m01,
                            m02, m10, m11, m12, m20, m21, m22);
}

// gs_develop_mhc: as gs_develop_bilinear, Malvar-He-Cutler demosaic (header).
extern "C" __global__ void gs_develop_mhc(const unsigned short* __restrict__ mosaic, float* __restrict__ dst, int h,
                                          int w, int red_row, int red_col, float b00, float b01, float b10, float b11,
                                          float s00, float s01, float s10, float s11, float m00, float m01, float m02,
                                          float m10, float m11, float m12, float m20, float m21, float m22)
{
    gs_develop_pixel<true>(mosaic, dst, h, w, red_row, red_col, b00, b01, b10, b11, s00, s01, s10, s11, m00, m01, m02,
                           m10, m11, m12, m20, m21, m22);
}
