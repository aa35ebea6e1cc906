// pyramid.cuh: the expand of a pyramid level at one sample, shared by pyramid.cu (expand_sub,
// expand_add, laplacian) and soft.cu (the soft fusion's score and fold, which make the Laplacian
// level where they use it). Twin of gpustack/backends/cpu/pyramid.py (_expand_row) and soft.py (_coarse_rows).

#ifndef GS_PYRAMID_CUH
#define GS_PYRAMID_CUH

#include "common.cuh"

// Row `row` of the coarse plane (wc samples) expanded to fine column x (k = x / 2):
//   even x: E0*g[k-1] + E1*g[k] + E0*g[k+1]      odd x: HALF*g[k] + HALF*g[k+1]
static __device__ __forceinline__ float gs_expand_taps(const float* __restrict__ row, int wc, int x)
{
    const int k = x >> 1;
    if ((x & 1) == 0) {
        return GS_E0 * row[gs_reflect(k - 1, wc)] + GS_E1 * row[k] + GS_E0 * row[gs_reflect(k + 1, wc)];
    }
    return GS_HALF * row[k] + GS_HALF * row[gs_reflect(k + 1, wc)];
}

// expand(coarse)[y, x] of one channel plane (hc, wc): the rows expanded first (along
// columns, gs_expand_taps), then combined down the columns with the same weights
// (k = y / 2):  even y: E0*r(k-1) + E1*r(k) + E0*r(k+1)     odd y: HALF*r(k) + HALF*r(k+1).
static __device__ __forceinline__ float gs_expand_at(const float* __restrict__ plane, int hc, int wc, int y, int x)
{
    const int k = y >> 1;
    const float hb = gs_expand_taps(plane + (gs_index_t)k * wc, wc, x);
    const float hn = gs_expand_taps(plane + (gs_index_t)gs_reflect(k + 1, hc) * wc, wc, x);
    if ((y & 1) == 0) {
        const float ha = gs_expand_taps(plane + (gs_index_t)gs_reflect(k - 1, hc) * wc, wc, x);
        return GS_E0 * ha + GS_E1 * hb + GS_E0 * hn;
    }
    return GS_HALF * hb + GS_HALF * hn;
}

#endif  // GS_PYRAMID_CUH
