// filter.cu: box sums along the rows or down the columns of a float32 (H, W) plane,
// row-major. Twin of gpustack/backends/cpu/filter.py.
//
// out[i, j] = 0.0f + src[i, j-r] + ... + src[i, j+r] (rows; the same down columns),
// added from the lowest offset up, reflect101 borders, no normalisation (callers
// divide where they need a mean). 2-D launches, one thread per output sample: block
// (32, 8, 1), grid (ceil(w / 32), ceil(h / 8), 1); guard j < w, i < h. src and dst
// must not overlap.

#include "common.cuh"

// gs_filter_box_rows: dst[i, j] = sum over d = -r..r of src[i, reflect(j + d, w)].
extern "C" __global__ void gs_filter_box_rows(const float* __restrict__ src, float* __restrict__ dst, int h, int w,
                                              int r)
{
    const int j = gs_col();
    const int i = gs_row();
    if (j >= w || i >= h) {
        return;
    }
    dst[(gs_index_t)i * w + j] = gs_box_row(src, w, i, j, r);
}

// gs_filter_box_cols: dst[i, j] = sum over d = -r..r of src[reflect(i + d, h), j].
extern "C" __global__ void gs_filter_box_cols(const float* __restrict__ src, float* __restrict__ dst, int h, int w,
                                              int r)
{
    const int j = gs_col();
    const int i = gs_row();
    if (j >= w || i >= h) {
        return;
    }
    dst[(gs_index_t)i * w + j] = gs_box_col(src, h, w, i, j, r);
}
