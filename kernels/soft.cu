// soft.cu: the `soft` fusion (the default method): per pixel, a soft selection of the
// sharpest frames, folded one frame at a time. Twin of gpustack/backends/cpu/soft.py.
//
// Layout: planar float32 (C, H, W) images and float32 (H, W) planes, row-major. gs_soft_score:
// a 2-D launch over the level's (w, h, 1). The others: 1-D launches, one thread per pixel
// p = i * w + j over n = h * w pixels (block 128, grid ceil(n / 128)); guard p < n. Each thread
// writes only its own pixel, so there are no races and no reductions.
//
// Weights: frame k's focus score plus the stack's noise floor, s = score + floor, gets
// weight (s / max_s)^power against the best score max_s seen at that pixel; when a frame
// beats max_s, what was accumulated is scaled by (max_s / s)^power, so that at the end
// every frame's weight is (s_k / max over frames)^power whatever the order. A ratio below
// rmin counts as weight 0 (no denormal weights: rmin^power stays a normal float). The
// power is an integer, computed by squaring (gs_soft_pow), the same multiplications in
// the same order as the twin.
//
// The depth map has weights of its own, with a lower floor and their own power dpower:
// (t / mt)^dpower, t = s - dshift against mt = max_s - dshift (the best t, since the shift
// is the same for every frame), rescaled by (mt_old / t)^dpower when a frame beats max_s;
// their own cut-off at rmin (rmin^dpower a normal float too). The image's weights average
// noisy frames; the depth's, sharper, keep the index on the sharpest ones.

#include "common.cuh"
#include "pyramid.cuh"

// r^e for an integer e >= 0 by binary exponentiation: result = 1; while e: if e & 1:
// result = result * b; b = b * b; e >>= 1 (b starts at r).
static __device__ __forceinline__ float gs_soft_pow(float r, int e)
{
    float result = GS_F1;
    float b = r;
    while (e > 0) {
        if (e & 1) {
            result = result * b;
        }
        b = b * b;
        e >>= 1;
    }
    return result;
}

// The finest Laplacian coefficient of channel ch at (i, j): frame - expand(coarse), the arithmetic of
// gs_pyramid_laplacian (coarse (C, hc, wc), the frame's next Gaussian level).
static __device__ __forceinline__ float gs_soft_lap(const float* __restrict__ frame, const float* __restrict__ coarse,
                                                    gs_index_t o, int ch, int hc, int wc, int i, int j)
{
    return frame[o] - gs_expand_at(coarse + (gs_index_t)ch * hc * wc, hc, wc, i, j);
}

// The focus score of one pyramid level at (i, j), from its Gaussian level fine (c, h, w) and the
// next one coarse (c, hc, wc), hc = (h + 1) / 2, wc = (w + 1) / 2, channels ch0 .. ch1 - 1:
//   lap(ch, a, b) = fine[ch, a, b] - expand(coarse)[ch, a, b]      (gs_pyramid_laplacian)
//   q(a, b) = lap(ch0, a, b)^2 + lap(ch0 + 1, a, b)^2 + ...        (gs_fuse_sqsum's order)
//   row(a) = 0 + q(a, reflect(j - r)) + ... + q(a, reflect(j + r))  (gs_box_row)
//   s = 0 + row(reflect(i - r)) + ... + row(reflect(i + r))          (gs_box_col)
//   with_coarse: s = s + expand(coarse_score)[i, j]                  (gs_pyramid_expand_add;
//   coarse_score (hc, wc), the next level's score; not read otherwise)
// each sum from the lowest offset up: the values of those kernels run in turn, without their
// intermediates. Every thread recomputes its window's coefficients (the same float32 values as its
// neighbours').
static __device__ __forceinline__ float gs_soft_score_at(const float* __restrict__ fine,
                                                         const float* __restrict__ coarse,
                                                         const float* __restrict__ coarse_score, int h, int w,
                                                         int ch0, int ch1, int r, int with_coarse, int i, int j)
{
    const int hc = (h + 1) / 2;
    const int wc = (w + 1) / 2;
    const gs_index_t hw = (gs_index_t)h * w;
    float s = GS_F0;
    for (int di = -r; di <= r; ++di) {
        const int a = gs_reflect(i + di, h);
        float row = GS_F0;
        for (int dj = -r; dj <= r; ++dj) {
            const int b = gs_reflect(j + dj, w);
            const gs_index_t o = (gs_index_t)a * w + b;
            float v = gs_soft_lap(fine, coarse, ch0 * hw + o, ch0, hc, wc, a, b);
            float q = v * v;
            for (int ch = ch0 + 1; ch < ch1; ++ch) {
                v = gs_soft_lap(fine, coarse, ch * hw + o, ch, hc, wc, a, b);
                q = q + v * v;
            }
            row = row + q;
        }
        s = s + row;
    }
    if (with_coarse) {
        s = s + gs_expand_at(coarse_score, hc, wc, i, j);
    }
    return s;
}

// gs_soft_score: out (h, w) = gs_soft_score_at over every channel of fine (c, h, w) (the caller
// passes a focus channel as a one-channel view). 2-D launch over (w, h, 1); guard j < w, i < h.
extern "C" __global__ void gs_soft_score(const float* __restrict__ fine, const float* __restrict__ coarse,
                                         const float* __restrict__ coarse_score, float* __restrict__ out, int h,
                                         int w, int c, int r, int with_coarse)
{
    const int j = gs_col();
    const int i = gs_row();
    if (j >= w || i >= h) {
        return;
    }
    out[(gs_index_t)i * w + j] = gs_soft_score_at(fine, coarse, coarse_score, h, w, 0, c, r, with_coarse, i, j);
}

// gs_soft_fold: score frame kf (frame index as float32, exact below 2**24) and fold it into the
// state. score[p] = gs_soft_score_at(frame, coarse, coarse_score) on channel focus (every channel
// when focus < 0), radius r; lap = gs_soft_lap(frame, coarse) (the finest Laplacian level, made
// here, not stored); then
//   s = score + floor;  sum_s = sum_s + s;  m = max_s
//   t = s - dshift;  mt = m - dshift     (the depth weights: their floor is floor - dshift)
//   if s > m:   r = m / s
//               r < rmin: acc = frame, acc_lap = lap, den = 1                    (restart)
//               else:     sc = r^power; acc = acc * sc + frame; acc_lap = acc_lap * sc + lap;
//                         den = den * sc + 1
//               rt = mt / t
//               rt >= rmin: sc = rt^dpower; depth_den = depth_den * sc + 1; depth_num = depth_num * sc + kf
//               else:       depth_den = 1, depth_num = kf                        (restart; NaN too)
//               max_s = s
//   else:       r = m > 0 ? s / m : 1
//               r >= rmin: wgt = r^power; acc = acc + wgt * frame; acc_lap = acc_lap + wgt * lap;
//                          den = den + wgt
//               rt = mt > 0 ? t / mt : 1
//               rt >= rmin: wgt = rt^dpower; depth_den = depth_den + wgt; depth_num = depth_num + wgt * kf
// (a NaN score compares false everywhere and adds nothing but to sum_s). frame, acc, acc_lap
// (C, H, W); coarse (C, (H + 1) / 2, (W + 1) / 2); coarse_score as in gs_soft_score_at; score,
// max_s, den, depth_den, depth_num, sum_s (H, W), n = h * w. State starts at 0 (the first frame
// restarts both: r = 0, rt = -dshift / t). maps == 0: the depth map's sums (sum_s, depth_den,
// depth_num) are neither read nor written (the caller passes other planes in their place).
extern "C" __global__ void gs_soft_fold(const float* __restrict__ frame, const float* __restrict__ coarse,
                                        const float* __restrict__ coarse_score, float* __restrict__ score,
                                        float* __restrict__ max_s, float* __restrict__ den,
                                        float* __restrict__ depth_den, float* __restrict__ depth_num,
                                        float* __restrict__ sum_s, float* __restrict__ acc,
                                        float* __restrict__ acc_lap, gs_index_t n, int h, int w, int c, int focus,
                                        int radius, int with_coarse, int maps, float floor_s, float dshift,
                                        float kf, int power, int dpower, float rmin)
{
    const gs_index_t p = gs_flat();
    if (p >= n) {
        return;
    }
    const int i = (int)(p / w);
    const int j = (int)(p - (gs_index_t)i * w);
    const int hc = (h + 1) / 2;
    const int wc = (w + 1) / 2;
    const int ch0 = focus < 0 ? 0 : focus;
    const int ch1 = focus < 0 ? c : focus + 1;
    const float sf = gs_soft_score_at(frame, coarse, coarse_score, h, w, ch0, ch1, radius, with_coarse, i, j);
    score[p] = sf;
    const float s = sf + floor_s;
    if (maps) {
        sum_s[p] = sum_s[p] + s;
    }
    const float m = max_s[p];
    const float t = s - dshift;
    const float mt = m - dshift;
    if (s > m) {
        const float r = m / s;
        if (r < rmin) {
            for (int ch = 0; ch < c; ++ch) {
                const gs_index_t o = ch * n + p;
                acc[o] = frame[o];
                acc_lap[o] = gs_soft_lap(frame, coarse, o, ch, hc, wc, i, j);
            }
            den[p] = GS_F1;
        } else {
            const float sc = gs_soft_pow(r, power);
            for (int ch = 0; ch < c; ++ch) {
                const gs_index_t o = ch * n + p;
                acc[o] = acc[o] * sc + frame[o];
                acc_lap[o] = acc_lap[o] * sc + gs_soft_lap(frame, coarse, o, ch, hc, wc, i, j);
            }
            den[p] = den[p] * sc + GS_F1;
        }
        if (maps) {
            const float rt = mt / t;
            if (rt >= rmin) {
                const float sc = gs_soft_pow(rt, dpower);
                depth_den[p] = depth_den[p] * sc + GS_F1;
                depth_num[p] = depth_num[p] * sc + kf;
            } else {
                depth_den[p] = GS_F1;
                depth_num[p] = kf;
            }
        }
        max_s[p] = s;
    } else {
        const float r = m > GS_F0 ? s / m : GS_F1;
        if (r >= rmin) {
            const float wgt = gs_soft_pow(r, power);
            for (int ch = 0; ch < c; ++ch) {
                const gs_index_t o = ch * n + p;
                acc[o] = acc[o] + wgt * frame[o];
                acc_lap[o] = acc_lap[o] + wgt * gs_soft_lap(frame, coarse, o, ch, hc, wc, i, j);
            }
            den[p] = den[p] + wgt;
        }
        const float rt = mt > GS_F0 ? t / mt : GS_F1;
        if (maps && rt >= rmin) {
            const float wgt = gs_soft_pow(rt, dpower);
            depth_den[p] = depth_den[p] + wgt;
            depth_num[p] = depth_num[p] + wgt * kf;
        }
    }
}

// gs_soft_finish: the weighted means, in place, and the depth map:
//   d = den;  acc = acc / d;  acc_lap = acc_lap / d (every channel);  depth = depth_num / depth_den
//   conf = max_s > 0 ? max((max_s - sum_s / nf) / max_s, 0) : 0
// (IEEE division, --prec-div). acc, acc_lap (C, H, W); den, depth_den, depth_num, max_s, sum_s,
// depth, conf (H, W). maps == 0: the means only (depth_den, depth_num, sum_s, depth and conf are
// neither read nor written).
extern "C" __global__ void gs_soft_finish(float* __restrict__ acc, float* __restrict__ acc_lap,
                                          const float* __restrict__ den, const float* __restrict__ depth_den,
                                          const float* __restrict__ depth_num,
                                          const float* __restrict__ max_s, const float* __restrict__ sum_s,
                                          float* __restrict__ depth, float* __restrict__ conf, gs_index_t n, int c,
                                          float nf, int maps)
{
    const gs_index_t p = gs_flat();
    if (p >= n) {
        return;
    }
    const float d = den[p];
    for (int ch = 0; ch < c; ++ch) {
        const gs_index_t o = ch * n + p;
        acc[o] = acc[o] / d;
        acc_lap[o] = acc_lap[o] / d;
    }
    if (!maps) {
        return;
    }
    depth[p] = depth_num[p] / depth_den[p];
    const float m = max_s[p];
    if (m > GS_F0) {
        float cf = (m - sum_s[p] / nf) / m;
        if (cf < GS_F0) {
            cf = GS_F0;
        }
        conf[p] = cf;
    } else {
        conf[p] = GS_F0;
    }
}

// gs_soft_contrast: how far the best frame's focus score stands above the stack's mean, in units
// of the noise floor, mapped to [0, 1) (the height map's confidence, microscopy):
//   num = max_s - sum_s / nf;  den = num + floor_s
//   out = den > 0 ? num / den : 0          (num / floor = 4 gives 0.8)
// where max_s and sum_s include the floor (so num is the best score minus the mean score). A dark
// background (only noise) stays near 0; a structure in focus somewhere near 1. max_s, sum_s, out
// (H, W); n pixels, 1-D launch as above.
extern "C" __global__ void gs_soft_contrast(const float* __restrict__ max_s, const float* __restrict__ sum_s,
                                            float* __restrict__ out, gs_index_t n, float nf, float floor_s)
{
    const gs_index_t p = gs_flat();
    if (p >= n) {
        return;
    }
    const float num = max_s[p] - sum_s[p] / nf;
    const float den = num + floor_s;
    out[p] = den > GS_F0 ? num / den : GS_F0;
}
