// fuse.cu: folding one frame's pyramid into the running fusion state. Twin of
// gpustack/backends/cpu/fuse.py.
//
// Layout: planar float32 (C, H, W) levels and float32 (H, W) planes, row-major.
// Energies are local sums of squared Laplacian coefficients over all channels in a
// (2r+1) x (2r+1) window: gs_fuse_sqsum, then gs_filter_box_rows (filter.cu), then
// the column sum inside gs_fuse_select. A coefficient replaces the stored one only
// when its energy is strictly higher (the first frame wins ties). Each thread owns
// one pixel and writes only that pixel's state, so there are no races.

#include "common.cuh"

// gs_fuse_sqsum: q (H, W) = lap[0]^2 + lap[1]^2 + ... + lap[C-1]^2, added in channel
// order (s = v0*v0; s = s + v*v). 1-D launch over the h * w pixels; guard p < h * w.
extern "C" __global__ void gs_fuse_sqsum(const float* __restrict__ lap, float* __restrict__ q, int h, int w, int c)
{
    const gs_index_t hw = (gs_index_t)h * w;
    const gs_index_t p = gs_flat();
    if (p >= hw) {
        return;
    }
    float v = lap[p];
    float s = v * v;
    for (int ch = 1; ch < c; ++ch) {
        v = lap[ch * hw + p];
        s = s + v * v;
    }
    q[p] = s;
}

// gs_fuse_select: e = gs_box_col(rowbox, i, j, r) (column box sum of the row box sums,
// reflect101 rows); where e > best_e[i, j]: best_e[i, j] = e and best_lap[:, i, j] =
// lap[:, i, j]. lap, best_lap (C, H, W); rowbox, best_e (H, W). 2-D launch over (w, h, 1);
// guard j < w, i < h.
extern "C" __global__ void gs_fuse_select(const float* __restrict__ lap, const float* __restrict__ rowbox,
                                          float* __restrict__ best_lap, float* __restrict__ best_e, int h, int w,
                                          int c, int r)
{
    const int j = gs_col();
    const int i = gs_row();
    if (j >= w || i >= h) {
        return;
    }
    const gs_index_t hw = (gs_index_t)h * w;
    const gs_index_t p = (gs_index_t)i * w + j;
    const float e = gs_box_col(rowbox, h, w, i, j, r);
    if (e > best_e[p]) {
        best_e[p] = e;
        for (int ch = 0; ch < c; ++ch) {
            best_lap[ch * hw + p] = lap[ch * hw + p];
        }
    }
}

// gs_fuse_accumulate: in place, acc[p] = acc[p] + g[p] for the n elements of two
// (C, H, W) arrays. 1-D launch over n; guard p < n.
extern "C" __global__ void gs_fuse_accumulate(float* __restrict__ acc, const float* __restrict__ g, gs_index_t n)
{
    const gs_index_t p = gs_flat();
    if (p >= n) {
        return;
    }
    acc[p] = acc[p] + g[p];
}

// gs_fuse_divide: out[p] = acc[p] / divisor (IEEE division, --prec-div) for the n
// elements of two (C, H, W) arrays. 1-D launch over n; guard p < n.
extern "C" __global__ void gs_fuse_divide(const float* __restrict__ acc, float* __restrict__ out, gs_index_t n,
                                          float divisor)
{
    const gs_index_t p = gs_flat();
    if (p >= n) {
        return;
    }
    out[p] = acc[p] / divisor;
}
