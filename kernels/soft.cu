// soft.cu: the `soft` fusion (the default method): per pixel, a soft selection of the
// sharpest frames, folded one frame at a time. Twin of gpustack/backends/cpu/soft.py.
//
// Layout: planar float32 (C, H, W) images and float32 (H, W) planes, row-major. 1-D
// launches, one thread per pixel p = i * w + j over n = h * w pixels (block 128, grid
// ceil(n / 128)); guard p < n; purely per pixel: each thread reads and writes only its
// own pixel, so there are no races and no reductions.
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

// gs_soft_fold: fold frame kf (frame index as float32, exact below 2**24) into the state.
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
// (a NaN score compares false everywhere and adds nothing but to sum_s). frame, lap, acc,
// acc_lap (C, H, W); score, max_s, den, depth_den, depth_num, sum_s (H, W). State starts at 0
// (the first frame restarts both: r = 0, rt = -dshift / t).
extern "C" __global__ void gs_soft_fold(const float* __restrict__ frame, const float* __restrict__ lap,
                                        const float* __restrict__ score, float* __restrict__ max_s,
                                        float* __restrict__ den, float* __restrict__ depth_den,
                                        float* __restrict__ depth_num, float* __restrict__ sum_s,
                                        float* __restrict__ acc, float* __restrict__ acc_lap, gs_index_t n, int c,
                                        float floor_s, float dshift, float kf, int power, int dpower,
                                        float rmin)
{
    const gs_index_t p = gs_flat();
    if (p >= n) {
        return;
    }
    const float s = score[p] + floor_s;
    sum_s[p] = sum_s[p] + s;
    const float m = max_s[p];
    const float t = s - dshift;
    const float mt = m - dshift;
    if (s > m) {
        const float r = m / s;
        if (r < rmin) {
            for (int ch = 0; ch < c; ++ch) {
                const gs_index_t o = ch * n + p;
                acc[o] = frame[o];
                acc_lap[o] = lap[o];
            }
            den[p] = GS_F1;
        } else {
            const float sc = gs_soft_pow(r, power);
            for (int ch = 0; ch < c; ++ch) {
                const gs_index_t o = ch * n + p;
                acc[o] = acc[o] * sc + frame[o];
                acc_lap[o] = acc_lap[o] * sc + lap[o];
            }
            den[p] = den[p] * sc + GS_F1;
        }
        const float rt = mt / t;
        if (rt >= rmin) {
            const float sc = gs_soft_pow(rt, dpower);
            depth_den[p] = depth_den[p] * sc + GS_F1;
            depth_num[p] = depth_num[p] * sc + kf;
        } else {
            depth_den[p] = GS_F1;
            depth_num[p] = kf;
        }
        max_s[p] = s;
    } else {
        const float r = m > GS_F0 ? s / m : GS_F1;
        if (r >= rmin) {
            const float wgt = gs_soft_pow(r, power);
            for (int ch = 0; ch < c; ++ch) {
                const gs_index_t o = ch * n + p;
                acc[o] = acc[o] + wgt * frame[o];
                acc_lap[o] = acc_lap[o] + wgt * lap[o];
            }
            den[p] = den[p] + wgt;
        }
        const float rt = mt > GS_F0 ? t / mt : GS_F1;
        if (rt >= rmin) {
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
// depth, conf (H, W).
extern "C" __global__ void gs_soft_finish(float* __restrict__ acc, float* __restrict__ acc_lap,
                                          const float* __restrict__ den, const float* __restrict__ depth_den,
                                          const float* __restrict__ depth_num,
                                          const float* __restrict__ max_s, const float* __restrict__ sum_s,
                                          float* __restrict__ depth, float* __restrict__ conf, gs_index_t n, int c,
                                          float nf)
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
