// pyramid.cu: Gaussian / Laplacian pyramid operators on planar float32 (C, H, W)
// arrays, row-major. Twin of gpustack/backends/cpu/pyramid.py: the same taps, summed
// in the same order (left to right, products first), reflect101 borders on the grid
// being read.
//
// 2-D launches, one thread per output sample: block (32, 8, 1), grid
// (ceil(W_out / 32), ceil(H_out / 8), C) with blockIdx.z the channel. Guard: the
// column and row are inside the output plane. Every thread gathers its own taps
// (no shared memory), so neighbouring threads recompute the same partial sums;
// recomputing gives the same float32 value, which keeps the parity exact.

#include "common.cuh"
#include "pyramid.cuh"

// Horizontal reduce tap of row `row` (w samples) for output column j:
// W0*s[2j-2] + W1*s[2j-1] + W2*s[2j] + W1*s[2j+1] + W0*s[2j+2].
static __device__ __forceinline__ float gs_reduce_taps(const float* __restrict__ row, int w, int j)
{
    const int b = 2 * j;
    return GS_W0 * row[gs_reflect(b - 2, w)] + GS_W1 * row[gs_reflect(b - 1, w)] + GS_W2 * row[gs_reflect(b, w)]
           + GS_W1 * row[gs_reflect(b + 1, w)] + GS_W0 * row[gs_reflect(b + 2, w)];
}

// gs_pyramid_reduce: src (C, h, w) -> dst (C, oh, ow), oh = (h + 1) / 2, ow = (w + 1) / 2.
//   t_m = gs_reduce_taps(src row reflect(2i - 2 + m, h)), m = 0..4
//   dst[ch, i, j] = W0*t_0 + W1*t_1 + W2*t_2 + W1*t_3 + W0*t_4
// Grid over the output (ow, oh, C).
extern "C" __global__ void gs_pyramid_reduce(const float* __restrict__ src, float* __restrict__ dst, int h, int w,
                                             int oh, int ow)
{
    const int j = gs_col();
    const int i = gs_row();
    const int ch = (int)blockIdx.z;
    if (j >= ow || i >= oh) {
        return;
    }
    const float* plane = src + (gs_index_t)ch * h * w;
    const int a = 2 * i - 2;
    const float t0 = gs_reduce_taps(plane + (gs_index_t)gs_reflect(a, h) * w, w, j);
    const float t1 = gs_reduce_taps(plane + (gs_index_t)gs_reflect(a + 1, h) * w, w, j);
    const float t2 = gs_reduce_taps(plane + (gs_index_t)gs_reflect(a + 2, h) * w, w, j);
    const float t3 = gs_reduce_taps(plane + (gs_index_t)gs_reflect(a + 3, h) * w, w, j);
    const float t4 = gs_reduce_taps(plane + (gs_index_t)gs_reflect(a + 4, h) * w, w, j);
    dst[((gs_index_t)ch * oh + i) * ow + j] = GS_W0 * t0 + GS_W1 * t1 + GS_W2 * t2 + GS_W1 * t3 + GS_W0 * t4;
}

// This thread's sample of a launch over the fine plane (w, h, C): false outside it; else its flat
// index *o in the (C, h, w) fine array and *e = expand(coarse)[ch, y, x].
static __device__ __forceinline__ bool gs_expand_sample(const float* __restrict__ coarse, int h, int w, int hc,
                                                        int wc, gs_index_t* o, float* e)
{
    const int x = gs_col();
    const int y = gs_row();
    const int ch = (int)blockIdx.z;
    if (x >= w || y >= h) {
        return false;
    }
    *e = gs_expand_at(coarse + (gs_index_t)ch * hc * wc, hc, wc, y, x);
    *o = ((gs_index_t)ch * h + y) * w + x;
    return true;
}

// fine[ch, y, x] = fine[ch, y, x] + SIGN * expand[y, x], SIGN = +1 or -1 (a plain add or
// subtract: no multiplication). Grid over the fine plane (w, h, C).
template <int SIGN>
static __device__ __forceinline__ void gs_expand_into(float* __restrict__ fine, const float* __restrict__ coarse, int h,
                                                      int w, int hc, int wc)
{
    gs_index_t o;
    float e;
    if (!gs_expand_sample(coarse, h, w, hc, wc, &o, &e)) {
        return;
    }
    if (SIGN > 0) {
        fine[o] = fine[o] + e;
    } else {
        fine[o] = fine[o] - e;
    }
}

// gs_pyramid_expand_sub: in place, fine (C, h, w) -= expand(coarse (C, hc, wc)),
// hc = (h + 1) / 2, wc = (w + 1) / 2: fine[ch, y, x] = fine[ch, y, x] - expand[y, x]
// (a Gaussian level becomes a Laplacian level).
extern "C" __global__ void gs_pyramid_expand_sub(float* __restrict__ fine, const float* __restrict__ coarse, int h,
                                                 int w, int hc, int wc)
{
    gs_expand_into<-1>(fine, coarse, h, w, hc, wc);
}

// gs_pyramid_expand_add: in place, fine (C, h, w) += expand(coarse (C, hc, wc)):
// fine[ch, y, x] = fine[ch, y, x] + expand[y, x] (collapse one level).
extern "C" __global__ void gs_pyramid_expand_add(float* __restrict__ fine, const float* __restrict__ coarse, int h,
                                                 int w, int hc, int wc)
{
    gs_expand_into<1>(fine, coarse, h, w, hc, wc);
}

// gs_pyramid_laplacian: out (C, h, w) = fine - expand(coarse (C, hc, wc)), hc = (h + 1) / 2,
// wc = (w + 1) / 2: out[ch, y, x] = fine[ch, y, x] - expand[y, x], the arithmetic of
// gs_pyramid_expand_sub written to a third array (the Gaussian level is kept). Grid over the
// fine plane (w, h, C). out may be neither fine nor coarse.
extern "C" __global__ void gs_pyramid_laplacian(const float* __restrict__ fine, const float* __restrict__ coarse,
                                                float* __restrict__ out, int h, int w, int hc, int wc)
{
    gs_index_t o;
    float e;
    if (!gs_expand_sample(coarse, h, w, hc, wc, &o, &e)) {
        return;
    }
    out[o] = fine[o] - e;
}
