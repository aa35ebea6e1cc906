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

// The mosaic sample at (y, x) (in range), normalised and clipped to [0, 1] (header).
static __device__ __forceinline__ float gs_develop_norm(const unsigned short* mosaic, int w, int y, int x, float b00,
                                                        float b01, float b10, float b11, float s00, float s01,
                                                        float s10, float s11)
{
    const int py = y & 1;
    const int px = x & 1;
    const float black = gs_develop_pick(py, px, b00, b01, b10, b11);
    const float scale = gs_develop_pick(py, px, s00, s01, s10, s11);
    float v = ((float)mosaic[(gs_index_t)y * w + x] - black) * scale;
    if (v < GS_F0) {
        v = GS_F0;
    }
    if (v > GS_F1) {
        v = GS_F1;
    }
    return v;
}

// The normalised sample at (i + di, j + dj), di, dj in [-2, 2].
static __device__ __forceinline__ float gs_develop_tap(const gs_develop_ctx& x, int di, int dj)
{
    return gs_develop_norm(x.mosaic, x.w, x.rows[di + 2], x.cols[dj + 2], x.b00, x.b01, x.b10, x.b11, x.s00, x.s01,
                           x.s10, x.s11);
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

// ---------------------------------------------------------------------------------------------
// RCD, ratio corrected demosaicing (L. Sanz Rodriguez, 2017; the default of RawTherapee and
// darktable), written from the algorithm's published steps. It runs on the mosaic padded by
// GS_RCD_PAD (10, even: the CFA phase is kept) reflect101 samples on each side, in seven
// launches over the padded grid (hp = h + 20 rows, wp = w + 20 columns), each writing planes
// of `work` (5, hp, wp) float32 that later launches read, so no launch reads what it writes:
//   V = work[0]  normalised samples          D = work[1]  VH, then PQ at the R and B sites
//   G = work[2]  green                       R = work[3], B = work[4]  red, blue
// A position (t, x) of the padded grid is a red site when (t & 1) == red_row and
// (x & 1) == red_col (GS_RCD_PAD is even), blue when both differ, else green; "R/B sites"
// are the red and blue ones. Each launch computes the band [m, hp - m) x [m, wp - m) named
// below, m = 4, 5, 4, 7, 10; every value it reads lies in a band written before. Every
// operation is float32 in the order written (the Numba twin computes the high-passes and the
// low-pass once per position into buffers; the values are the same):
//   hp_(dt,dx)(t, x) = u * u,  u = ((((V(-3) - V(-1)) - V(1)) + V(3)) - 3 * (V(-2) + V(2))) + 6 * V(0)
//                      where V(k) = V[t + k*dt, x + k*dx]
//   ratio(a, b)   = a' / (a' + b'), a' = max(a, 1e-10), b' = max(b, 1e-10) (as two branches)
//   disc(P, t, x) = near if |0.5 - near| > |0.5 - P[t, x]| else P[t, x], near = the sum of P
//                   at (t-1, x-1), (t-1, x+1), (t+1, x-1), (t+1, x+1) in that order, * 0.25
//   lpf(t, x)     = (V + 0.5 * (((V(-1,0) + V(1,0)) + V(0,-1)) + V(0,1)))
//                   + 0.25 * (((V(-1,-1) + V(-1,1)) + V(1,-1)) + V(1,1))
//  1 normalise (all): V = the normalised sample (as above) at (reflect(t - 10), reflect(x - 10))
//  2 vh [4]: D = ratio((hp_v(t-1) + hp_v(t)) + hp_v(t+1), (hp_h(x-1) + hp_h(x)) + hp_h(x+1))
//  3 green [5]: G sites G = V; R/B sites, with c = V(0,0), n1 = V(-1,0), n2 = V(-2,0), ...:
//      N = (((1e-5 + |n1 - s1|) + |c - n2|) + |n1 - n3|) + |n2 - n4|   (S, W, E alike)
//      l = lpf(t, x); Ne = (n1 * (l + l)) / ((1e-5 + l) + lpf(t - 2, x))   (S, W, E alike)
//      Vest = (S * Ne + N * Se) / (N + S);  Hest = (W * Ee + E * We) / (E + W)
//      G = disc(D) * (Hest - Vest) + Vest
//  4 pq [4], R/B sites: D = ratio((hp_p(t-1, x-1) + hp_p) + hp_p(t+1, x+1),
//                                 (hp_q(t-1, x+1) + hp_q) + hp_q(t+1, x-1)), p = (1, 1), q = (1, -1)
//  5 rb [7], R/B sites: own colour = V; the other from the diagonal neighbours (native there):
//      NWg = ((1e-5 + |x_nw - x_se|) + |x_nw - V(-3,-3)|) + |G - G(-2,-2)|   (NE: x_ne - x_sw,
//      V(-3,3), G(-2,2); SW: x_ne - x_sw, V(3,-3), G(2,-2); SE: x_nw - x_se, V(3,3), G(2,2))
//      NWe = x_nw - G(-1,-1) ...;  Pest = (NWg * SEe + SEg * NWe) / (NWg + SEg)
//      Qest = (NEg * SWe + SWg * NEe) / (NEg + SWg);  other = G + (disc(D) * (Qest - Pest) + Pest)
//  6 rb at green [10], G sites, for X = R then B (both known at the R/B neighbours now):
//      N1 = 1e-5 + |G - G(-2,0)| (S1, W1, E1 alike); sn = |X(-1,0) - X(1,0)|, ew = |X(0,-1) - X(0,1)|
//      N = (N1 + sn) + |X(-1,0) - X(-3,0)| (S, W, E alike)
//      Vest = (N * (X(1,0) - G(1,0)) + S * (X(-1,0) - G(-1,0))) / (N + S)
//      Hest = (E * (X(0,-1) - G(0,-1)) + W * (X(0,1) - G(0,1))) / (E + W)
//      X = G + (disc(D) * (Hest - Vest) + Vest)
//  7 finish (image pixels): dst[k] = (R*m[k][0] + G*m[k][1]) + B*m[k][2] at (t, x) = (i + 10, j + 10)

#define GS_RCD_PAD 10
#define GS_RCD_EPS 1e-5f
#define GS_RCD_EPS_SQ 1e-10f
#define GS_DEV_THREE 3.0f

struct gs_rcd_grid {
    float* work;
    int hp, wp;
    gs_index_t plane;
};

static __device__ __forceinline__ float gs_rcd_at(const gs_rcd_grid& g, int p, int t, int x)
{
    return g.work[p * g.plane + (gs_index_t)t * g.wp + x];
}

static __device__ __forceinline__ void gs_rcd_set(const gs_rcd_grid& g, int p, int t, int x, float value)
{
    g.work[p * g.plane + (gs_index_t)t * g.wp + x] = value;
}

static __device__ __forceinline__ float gs_rcd_hp(const gs_rcd_grid& g, int t, int x, int dt, int dx)
{
    float u = ((gs_rcd_at(g, 0, t - 3 * dt, x - 3 * dx) - gs_rcd_at(g, 0, t - dt, x - dx))
               - gs_rcd_at(g, 0, t + dt, x + dx))
              + gs_rcd_at(g, 0, t + 3 * dt, x + 3 * dx);
    u = (u - GS_DEV_THREE * (gs_rcd_at(g, 0, t - 2 * dt, x - 2 * dx) + gs_rcd_at(g, 0, t + 2 * dt, x + 2 * dx)))
        + GS_DEV_SIX * gs_rcd_at(g, 0, t, x);
    return u * u;
}

static __device__ __forceinline__ float gs_rcd_ratio(float a, float b)
{
    if (a < GS_RCD_EPS_SQ) {
        a = GS_RCD_EPS_SQ;
    }
    if (b < GS_RCD_EPS_SQ) {
        b = GS_RCD_EPS_SQ;
    }
    return a / (a + b);
}

static __device__ __forceinline__ float gs_rcd_disc(const gs_rcd_grid& g, int t, int x)
{
    const float centre = gs_rcd_at(g, 1, t, x);
    const float near = (((gs_rcd_at(g, 1, t - 1, x - 1) + gs_rcd_at(g, 1, t - 1, x + 1))
                         + gs_rcd_at(g, 1, t + 1, x - 1))
                        + gs_rcd_at(g, 1, t + 1, x + 1))
                       * GS_DEV_QUARTER;
    return fabsf(GS_HALF - near) > fabsf(GS_HALF - centre) ? near : centre;
}

static __device__ __forceinline__ float gs_rcd_lpf(const gs_rcd_grid& g, int t, int x)
{
    return (gs_rcd_at(g, 0, t, x)
            + GS_HALF * (((gs_rcd_at(g, 0, t - 1, x) + gs_rcd_at(g, 0, t + 1, x)) + gs_rcd_at(g, 0, t, x - 1))
                         + gs_rcd_at(g, 0, t, x + 1)))
           + GS_DEV_QUARTER * (((gs_rcd_at(g, 0, t - 1, x - 1) + gs_rcd_at(g, 0, t - 1, x + 1))
                                + gs_rcd_at(g, 0, t + 1, x - 1))
                               + gs_rcd_at(g, 0, t + 1, x + 1));
}

// The thread's position when it lies in the band [m, hp - m) x [m, wp - m), else false.
static __device__ __forceinline__ bool gs_rcd_pos(gs_rcd_grid& g, float* work, int hp, int wp, int m, int* t, int* x)
{
    g.work = work;
    g.hp = hp;
    g.wp = wp;
    g.plane = (gs_index_t)hp * wp;
    *x = gs_col();
    *t = gs_row();
    return *t >= m && *t < hp - m && *x >= m && *x < wp - m;
}

static __device__ __forceinline__ bool gs_rcd_is_green(int t, int x, int red_row, int red_col)
{
    return ((t & 1) == red_row) != ((x & 1) == red_col);
}

// 1: V at every padded position from the mosaic (h, w), reflect101.
extern "C" __global__ void gs_develop_rcd_normalise(const unsigned short* __restrict__ mosaic, float* __restrict__ work,
                                                    int h, int w, float b00, float b01, float b10, float b11,
                                                    float s00, float s01, float s10, float s11)
{
    gs_rcd_grid g;
    int t, x;
    if (!gs_rcd_pos(g, work, h + 2 * GS_RCD_PAD, w + 2 * GS_RCD_PAD, 0, &t, &x)) {
        return;
    }
    gs_rcd_set(g, 0, t, x,
               gs_develop_norm(mosaic, w, gs_reflect(t - GS_RCD_PAD, h), gs_reflect(x - GS_RCD_PAD, w), b00, b01,
                               b10, b11, s00, s01, s10, s11));
}

// 2: D = VH on [4, hp - 4).
extern "C" __global__ void gs_develop_rcd_vh(float* __restrict__ work, int hp, int wp)
{
    gs_rcd_grid g;
    int t, x;
    if (!gs_rcd_pos(g, work, hp, wp, 4, &t, &x)) {
        return;
    }
    const float vert = (gs_rcd_hp(g, t - 1, x, 1, 0) + gs_rcd_hp(g, t, x, 1, 0)) + gs_rcd_hp(g, t + 1, x, 1, 0);
    const float horz = (gs_rcd_hp(g, t, x - 1, 0, 1) + gs_rcd_hp(g, t, x, 0, 1)) + gs_rcd_hp(g, t, x + 1, 0, 1);
    gs_rcd_set(g, 1, t, x, gs_rcd_ratio(vert, horz));
}

// 3: G on [5, hp - 5).
extern "C" __global__ void gs_develop_rcd_green(float* __restrict__ work, int hp, int wp, int red_row, int red_col)
{
    gs_rcd_grid g;
    int t, x;
    if (!gs_rcd_pos(g, work, hp, wp, 5, &t, &x)) {
        return;
    }
    const float c = gs_rcd_at(g, 0, t, x);
    if (gs_rcd_is_green(t, x, red_row, red_col)) {
        gs_rcd_set(g, 2, t, x, c);
        return;
    }
    const float n1 = gs_rcd_at(g, 0, t - 1, x), s1 = gs_rcd_at(g, 0, t + 1, x);
    const float w1 = gs_rcd_at(g, 0, t, x - 1), e1 = gs_rcd_at(g, 0, t, x + 1);
    const float n2 = gs_rcd_at(g, 0, t - 2, x), s2 = gs_rcd_at(g, 0, t + 2, x);
    const float w2 = gs_rcd_at(g, 0, t, x - 2), e2 = gs_rcd_at(g, 0, t, x + 2);
    const float ng = (((GS_RCD_EPS + fabsf(n1 - s1)) + fabsf(c - n2))
                      + fabsf(n1 - gs_rcd_at(g, 0, t - 3, x)))
                     + fabsf(n2 - gs_rcd_at(g, 0, t - 4, x));
    const float sg = (((GS_RCD_EPS + fabsf(n1 - s1)) + fabsf(c - s2))
                      + fabsf(s1 - gs_rcd_at(g, 0, t + 3, x)))
                     + fabsf(s2 - gs_rcd_at(g, 0, t + 4, x));
    const float wg = (((GS_RCD_EPS + fabsf(w1 - e1)) + fabsf(c - w2))
                      + fabsf(w1 - gs_rcd_at(g, 0, t, x - 3)))
                     + fabsf(w2 - gs_rcd_at(g, 0, t, x - 4));
    const float eg = (((GS_RCD_EPS + fabsf(w1 - e1)) + fabsf(c - e2))
                      + fabsf(e1 - gs_rcd_at(g, 0, t, x + 3)))
                     + fabsf(e2 - gs_rcd_at(g, 0, t, x + 4));
    const float lc = gs_rcd_lpf(g, t, x);
    const float l2 = lc + lc;
    const float ne = (n1 * l2) / ((GS_RCD_EPS + lc) + gs_rcd_lpf(g, t - 2, x));
    const float se = (s1 * l2) / ((GS_RCD_EPS + lc) + gs_rcd_lpf(g, t + 2, x));
    const float we = (w1 * l2) / ((GS_RCD_EPS + lc) + gs_rcd_lpf(g, t, x - 2));
    const float ee = (e1 * l2) / ((GS_RCD_EPS + lc) + gs_rcd_lpf(g, t, x + 2));
    const float vest = (sg * ne + ng * se) / (ng + sg);
    const float hest = (wg * ee + eg * we) / (eg + wg);
    gs_rcd_set(g, 2, t, x, gs_rcd_disc(g, t, x) * (hest - vest) + vest);
}

// 4: D = PQ at the R/B sites of [4, hp - 4).
extern "C" __global__ void gs_develop_rcd_pq(float* __restrict__ work, int hp, int wp, int red_row, int red_col)
{
    gs_rcd_grid g;
    int t, x;
    if (!gs_rcd_pos(g, work, hp, wp, 4, &t, &x) || gs_rcd_is_green(t, x, red_row, red_col)) {
        return;
    }
    const float p = (gs_rcd_hp(g, t - 1, x - 1, 1, 1) + gs_rcd_hp(g, t, x, 1, 1)) + gs_rcd_hp(g, t + 1, x + 1, 1, 1);
    const float q = (gs_rcd_hp(g, t - 1, x + 1, 1, -1) + gs_rcd_hp(g, t, x, 1, -1)) + gs_rcd_hp(g, t + 1, x - 1, 1, -1);
    gs_rcd_set(g, 1, t, x, gs_rcd_ratio(p, q));
}

// 5: R and B at the R/B sites of [7, hp - 7).
extern "C" __global__ void gs_develop_rcd_rb(float* __restrict__ work, int hp, int wp, int red_row, int red_col)
{
    gs_rcd_grid g;
    int t, x;
    if (!gs_rcd_pos(g, work, hp, wp, 7, &t, &x) || gs_rcd_is_green(t, x, red_row, red_col)) {
        return;
    }
    const bool red_here = (t & 1) == red_row;
    const int own = red_here ? 3 : 4;
    const int other = red_here ? 4 : 3;
    gs_rcd_set(g, own, t, x, gs_rcd_at(g, 0, t, x));
    const float g0 = gs_rcd_at(g, 2, t, x);
    const float x_nw = gs_rcd_at(g, 0, t - 1, x - 1), x_ne = gs_rcd_at(g, 0, t - 1, x + 1);
    const float x_sw = gs_rcd_at(g, 0, t + 1, x - 1), x_se = gs_rcd_at(g, 0, t + 1, x + 1);
    const float nwg = ((GS_RCD_EPS + fabsf(x_nw - x_se)) + fabsf(x_nw - gs_rcd_at(g, 0, t - 3, x - 3)))
                      + fabsf(g0 - gs_rcd_at(g, 2, t - 2, x - 2));
    const float neg = ((GS_RCD_EPS + fabsf(x_ne - x_sw)) + fabsf(x_ne - gs_rcd_at(g, 0, t - 3, x + 3)))
                      + fabsf(g0 - gs_rcd_at(g, 2, t - 2, x + 2));
    const float swg = ((GS_RCD_EPS + fabsf(x_ne - x_sw)) + fabsf(x_sw - gs_rcd_at(g, 0, t + 3, x - 3)))
                      + fabsf(g0 - gs_rcd_at(g, 2, t + 2, x - 2));
    const float seg = ((GS_RCD_EPS + fabsf(x_nw - x_se)) + fabsf(x_se - gs_rcd_at(g, 0, t + 3, x + 3)))
                      + fabsf(g0 - gs_rcd_at(g, 2, t + 2, x + 2));
    const float nwe = x_nw - gs_rcd_at(g, 2, t - 1, x - 1);
    const float nee = x_ne - gs_rcd_at(g, 2, t - 1, x + 1);
    const float swe = x_sw - gs_rcd_at(g, 2, t + 1, x - 1);
    const float see = x_se - gs_rcd_at(g, 2, t + 1, x + 1);
    const float pest = (nwg * see + seg * nwe) / (nwg + seg);
    const float qest = (neg * swe + swg * nee) / (neg + swg);
    gs_rcd_set(g, other, t, x, g0 + (gs_rcd_disc(g, t, x) * (qest - pest) + pest));
}

// 6: R and B at the G sites of [10, hp - 10).
extern "C" __global__ void gs_develop_rcd_rb_at_green(float* __restrict__ work, int hp, int wp, int red_row,
                                                      int red_col)
{
    gs_rcd_grid g;
    int t, x;
    if (!gs_rcd_pos(g, work, hp, wp, GS_RCD_PAD, &t, &x) || !gs_rcd_is_green(t, x, red_row, red_col)) {
        return;
    }
    const float disc = gs_rcd_disc(g, t, x);
    const float g0 = gs_rcd_at(g, 2, t, x);
    const float gn = gs_rcd_at(g, 2, t - 1, x), gs = gs_rcd_at(g, 2, t + 1, x);
    const float gw = gs_rcd_at(g, 2, t, x - 1), ge = gs_rcd_at(g, 2, t, x + 1);
    const float n1 = GS_RCD_EPS + fabsf(g0 - gs_rcd_at(g, 2, t - 2, x));
    const float s1 = GS_RCD_EPS + fabsf(g0 - gs_rcd_at(g, 2, t + 2, x));
    const float w1 = GS_RCD_EPS + fabsf(g0 - gs_rcd_at(g, 2, t, x - 2));
    const float e1 = GS_RCD_EPS + fabsf(g0 - gs_rcd_at(g, 2, t, x + 2));
    for (int p = 3; p <= 4; ++p) {
        const float xn = gs_rcd_at(g, p, t - 1, x), xs = gs_rcd_at(g, p, t + 1, x);
        const float xw = gs_rcd_at(g, p, t, x - 1), xe = gs_rcd_at(g, p, t, x + 1);
        const float sn = fabsf(xn - xs);
        const float ew = fabsf(xw - xe);
        const float ng = (n1 + sn) + fabsf(xn - gs_rcd_at(g, p, t - 3, x));
        const float sg = (s1 + sn) + fabsf(xs - gs_rcd_at(g, p, t + 3, x));
        const float wg = (w1 + ew) + fabsf(xw - gs_rcd_at(g, p, t, x - 3));
        const float eg = (e1 + ew) + fabsf(xe - gs_rcd_at(g, p, t, x + 3));
        const float vest = (ng * (xs - gs) + sg * (xn - gn)) / (ng + sg);
        const float hest = (eg * (xw - gw) + wg * (xe - ge)) / (eg + wg);
        gs_rcd_set(g, p, t, x, g0 + (disc * (hest - vest) + vest));
    }
}

// 7: dst (3, h, w) = matrix @ (R, G, B) of the image positions.
extern "C" __global__ void gs_develop_rcd_finish(const float* __restrict__ work, float* __restrict__ dst, int h, int w,
                                                 float m00, float m01, float m02, float m10, float m11, float m12,
                                                 float m20, float m21, float m22)
{
    const int j = gs_col();
    const int i = gs_row();
    if (j >= w || i >= h) {
        return;
    }
    const int wp = w + 2 * GS_RCD_PAD;
    const gs_index_t plane = (gs_index_t)(h + 2 * GS_RCD_PAD) * wp;
    const gs_index_t q = (gs_index_t)(i + GS_RCD_PAD) * wp + (j + GS_RCD_PAD);
    const float r = work[3 * plane + q];
    const float gg = work[2 * plane + q];
    const float b = work[4 * plane + q];
    const gs_index_t hw = (gs_index_t)h * w;
    const gs_index_t p = (gs_index_t)i * w + j;
    dst[p] = r * m00 + gg * m01 + b * m02;
    dst[hw + p] = r * m10 + gg * m11 + b * m12;
    dst[2 * hw + p] = r * m20 + gg * m21 + b * m22;
}
