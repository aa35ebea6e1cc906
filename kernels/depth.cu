// depth.cu: depth map (streaming sub-frame argmax, confidence, smoothing) and the
// depthmap-method blend. Twin of gpustack/backends/cpu/depth.py.
//
// Layout: float32 (H, W) planes and planar float32 (C, H, W) images, row-major.
// gs_depth_track is a 2-D launch (block (32, 8, 1), grid (ceil(w / 32), ceil(h / 8), 1);
// guard j < w, i < h; reflect101 rows in its column box sum); the others are 1-D
// launches, one thread per pixel p = i * w + j over n = h * w pixels (block 128, grid
// ceil(n / 128)); guard p < n; purely per pixel. Each thread writes only its own pixel.

#include "common.cuh"

// gs_depth_track: fold frame kf's focus scores into the depth state (kf: the frame index
// as float32, exact below 2**24). prev_s holds on entry the score of frame kf - 1 (side 1),
// of frame kf + 1 (side -1, frames fed in reverse) or nothing (side 0), and kf's on exit.
// s = gs_box_col(rowbox, i, j, r) (column box sum of the row box sums), then, all planes
// (H, W) float32:
//   sum_s += s
//   if s > best_s: best_s = s; best_k = kf;
//                  side > 0: prev_of_best = prev_s; next_of_best = -1
//                  side < 0: prev_of_best = -1;     next_of_best = prev_s
//                  side 0:   prev_of_best = -1;     next_of_best = -1
//   else if best_k == kf - 1: next_of_best = s
//   else if best_k == kf + 1: prev_of_best = s
//   prev_s = s
extern "C" __global__ void gs_depth_track(const float* __restrict__ rowbox, float* __restrict__ best_s,
                                          float* __restrict__ prev_s, float* __restrict__ best_k,
                                          float* __restrict__ prev_of_best, float* __restrict__ next_of_best,
                                          float* __restrict__ sum_s, int h, int w, int r, float kf, int side)
{
    const int j = gs_col();
    const int i = gs_row();
    if (j >= w || i >= h) {
        return;
    }
    const gs_index_t p = (gs_index_t)i * w + j;
    const float s = gs_box_col(rowbox, h, w, i, j, r);
    sum_s[p] = sum_s[p] + s;
    if (s > best_s[p]) {
        best_s[p] = s;
        best_k[p] = kf;
        if (side > 0) {
            prev_of_best[p] = prev_s[p];
            next_of_best[p] = -GS_F1;
        } else if (side < 0) {
            prev_of_best[p] = -GS_F1;
            next_of_best[p] = prev_s[p];
        } else {
            prev_of_best[p] = -GS_F1;
            next_of_best[p] = -GS_F1;
        }
    } else if (best_k[p] == kf - GS_F1) {
        next_of_best[p] = s;
    } else if (best_k[p] == kf + GS_F1) {
        prev_of_best[p] = s;
    }
    prev_s[p] = s;
}

// gs_depth_finalize: from the depth state (best_s, best_k, prev_of_best, next_of_best,
// sum_s) and the frame count nf:
//   d = best_k; when prev_of_best >= 0 and next_of_best >= 0:
//     a = sp - b; c = sn - b; den = a + c
//     if den < 0: off = HALF * (a - c) / den, clipped to [-0.5, 0.5]; d = d + off
//   depth = d
//   conf = b > 0 ? max((b - sum_s / nf) / b, 0) : 0
extern "C" __global__ void gs_depth_finalize(const float* __restrict__ best_s, const float* __restrict__ best_k,
                                             const float* __restrict__ prev_of_best,
                                             const float* __restrict__ next_of_best, const float* __restrict__ sum_s,
                                             float* __restrict__ depth, float* __restrict__ conf, gs_index_t n,
                                             float nf)
{
    const gs_index_t p = gs_flat();
    if (p >= n) {
        return;
    }
    const float b = best_s[p];
    float d = best_k[p];
    const float sp = prev_of_best[p];
    const float sn = next_of_best[p];
    if (sp >= GS_F0 && sn >= GS_F0) {
        const float a = sp - b;
        const float c = sn - b;
        const float den = a + c;
        if (den < GS_F0) {
            float off = GS_HALF * (a - c) / den;
            if (off > GS_HALF) {
                off = GS_HALF;
            } else if (off < GS_NEG_HALF) {
                off = GS_NEG_HALF;
            }
            d = d + off;
        }
    }
    depth[p] = d;
    if (b > GS_F0) {
        const float mean = sum_s[p] / nf;
        float cf = (b - mean) / b;
        if (cf < GS_F0) {
            cf = GS_F0;
        }
        conf[p] = cf;
    } else {
        conf[p] = GS_F0;
    }
}

// gs_depth_weight: num = depth * conf.
extern "C" __global__ void gs_depth_weight(const float* __restrict__ depth, const float* __restrict__ conf,
                                           float* __restrict__ num, gs_index_t n)
{
    const gs_index_t p = gs_flat();
    if (p >= n) {
        return;
    }
    num[p] = depth[p] * conf[p];
}

// gs_depth_ratio: out = den > 0 ? num / den : fallback.
extern "C" __global__ void gs_depth_ratio(const float* __restrict__ num, const float* __restrict__ den,
                                          const float* __restrict__ fallback, float* __restrict__ out, gs_index_t n)
{
    const gs_index_t p = gs_flat();
    if (p >= n) {
        return;
    }
    const float d = den[p];
    if (d > GS_F0) {
        out[p] = num[p] / d;
    } else {
        out[p] = fallback[p];
    }
}

// gs_depthmap_accumulate: frame kf's share of every pixel, in place:
//   wgt = 1 - |depth - kf|; if wgt > 0: acc[ch] = acc[ch] + wgt * frame[ch] for every channel.
// frame, acc (C, H, W); depth (H, W).
extern "C" __global__ void gs_depthmap_accumulate(const float* __restrict__ frame, const float* __restrict__ depth,
                                                  float* __restrict__ acc, gs_index_t n, int c, float kf)
{
    const gs_index_t p = gs_flat();
    if (p >= n) {
        return;
    }
    const float wgt = GS_F1 - fabsf(depth[p] - kf);
    if (wgt > GS_F0) {
        for (int ch = 0; ch < c; ++ch) {
            const gs_index_t o = ch * n + p;
            acc[o] = acc[o] + wgt * frame[o];
        }
    }
}

// gs_depthmap_blend: m = clip((conf - lo) * inv_width, 0, 1) (clipped below first);
// out[ch] = pyr[ch] + m * (acc[ch] - pyr[ch]) for every channel. acc, pyr, out (C, H, W);
// conf (H, W). out may be neither acc nor pyr.
extern "C" __global__ void gs_depthmap_blend(const float* __restrict__ acc, const float* __restrict__ pyr,
                                             const float* __restrict__ conf, float* __restrict__ out, gs_index_t n,
                                             int c, float lo, float inv_width)
{
    const gs_index_t p = gs_flat();
    if (p >= n) {
        return;
    }
    float m = (conf[p] - lo) * inv_width;
    if (m < GS_F0) {
        m = GS_F0;
    } else if (m > GS_F1) {
        m = GS_F1;
    }
    for (int ch = 0; ch < c; ++ch) {
        const gs_index_t o = ch * n + p;
        const float v = pyr[o];
        out[o] = v + m * (acc[o] - v);
    }
}
