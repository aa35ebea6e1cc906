"""The synthetic stack generator: geometry, defocus, occlusion, noise, determinism."""

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("skimage")

from gpustack import metrics, synth  # noqa: E402
from gpustack.errors import InputError  # noqa: E402

SMALL = {"shape": (160, 224), "n_frames": 8}


def _energy(frame):
    """Local Laplacian energy of the encoded luminance (9x9 window)."""
    lum = metrics.luminance(metrics.srgb_encode(frame))
    return ndimage.uniform_filter(ndimage.laplace(lum) ** 2, 9)


@pytest.fixture(scope="module")
def mixed():
    return synth.make_stack(scene="astronaut", depth="mixed", seed=3, **SMALL)


@pytest.fixture(scope="module")
def steps_clean():
    # max_blur = (n_frames - 1) / 2 makes blur_per_frame 1 px: the nearest frame renders a flat layer exactly sharp.
    return synth.make_stack(scene="coffee", depth="steps", noise=False, seed=1, max_blur=3.5, **SMALL)


# ---------------------------------------------------------------- the result


def test_make_stack_shapes_types_and_ranges(mixed):
    h, w = SMALL["shape"]
    assert len(mixed.frames) == 8
    for f in mixed.frames:
        assert f.shape == (h, w, 3) and f.dtype == np.float32
        assert f.min() >= 0.0 and f.max() <= 1.0
    assert mixed.truth.shape == (h, w, 3) and mixed.truth.dtype == np.float32
    assert mixed.depth.shape == (h, w) and mixed.depth.dtype == np.float32
    assert mixed.depth.min() >= 0.0 and mixed.depth.max() <= 7.0
    assert mixed.depth.max() - mixed.depth.min() > 5.0  # the depth map uses most of the stack
    assert mixed.edges.dtype == bool and mixed.edges.shape == (h, w)
    assert mixed.labels.shape == (h, w) and set(np.unique(mixed.labels)) == {0, 1, 2}
    p = mixed.params
    assert p["scene"] == "astronaut" and p["depth"] == "mixed" and p["seed"] == 3
    assert p["blur_per_frame"] == pytest.approx(6.0 / 3.5)


def test_channels_and_gray_scenes():
    one = synth.make_stack(scene="astronaut", depth="slope", channels=1, noise=False, shape=(48, 64), n_frames=3)
    assert one.truth.shape == (48, 64, 1) and one.frames[0].shape == (48, 64, 1)
    gray = synth.make_stack(scene="camera", depth="slope", channels=3, noise=False, shape=(48, 64), n_frames=3)
    assert np.array_equal(gray.truth[..., 0], gray.truth[..., 2])


def test_every_scene_loads():
    truths = []
    for name in synth.list_scenes():
        s = synth.make_stack(scene=name, depth="slope", n_frames=2, shape=(32, 48), noise=False)
        assert s.truth.shape == (32, 48, 3) and 0 <= s.truth.min() and s.truth.max() <= 1
        assert s.truth.std() > 0.01, name  # a photograph, not a flat field
        truths.append(s.truth)
    assert len({t.tobytes() for t in truths}) == len(truths)
    assert synth.list_depths() == ["slope", "steps", "mixed", "dome"]


def test_scene_array_and_bad_arguments():
    s = synth.make_stack(scene=np.full((40, 56), 0.3), depth="dome", n_frames=3, noise=False)
    assert s.truth.shape == (40, 56, 1)
    np.testing.assert_allclose(s.frames[1], 0.3, atol=1e-6)  # a flat scene stays flat under any blur
    for kwargs in (
        {"scene": "nope"},
        {"depth": "nope"},
        {"n_frames": 1},
        {"channels": 2},
        {"scene": np.full((40, 40, 3), 2.0)},
    ):
        with pytest.raises(InputError):
            synth.make_stack(shape=(32, 32), **kwargs)


def test_is_deterministic():
    a = synth.make_stack(scene="chelsea", depth="mixed", seed=7, shape=(64, 96), n_frames=4)
    b = synth.make_stack(scene="chelsea", depth="mixed", seed=7, shape=(64, 96), n_frames=4)
    c = synth.make_stack(scene="chelsea", depth="mixed", seed=8, shape=(64, 96), n_frames=4)
    assert all(fa.tobytes() == fb.tobytes() for fa, fb in zip(a.frames, b.frames))
    assert a.depth.tobytes() == b.depth.tobytes() and a.edges.tobytes() == b.edges.tobytes()
    assert not np.array_equal(a.depth, c.depth)
    assert all(not np.array_equal(fa, fc) for fa, fc in zip(a.frames, c.frames))


def test_encodings():
    s = synth.make_stack(scene=np.full((32, 32, 3), 0.2), depth="slope", n_frames=2, noise=False)
    enc = 1.055 * 0.2 ** (1 / 2.4) - 0.055
    u16, u8 = s.as_uint16(), s.as_uint8()
    assert u16[0].dtype == np.uint16 and u8[0].dtype == np.uint8
    assert np.all(u16[1] == round(enc * 65535)) and np.all(u8[1] == round(enc * 255))


# ---------------------------------------------------------------- defocus


@pytest.mark.parametrize("depth", ["slope", "mixed", "dome", "steps"])
def test_frame_k_is_sharpest_where_depth_is_k(depth):
    s = synth.make_stack(scene="astronaut", depth=depth, seed=2, **SMALL)
    best = np.stack([_energy(f) for f in s.frames]).argmax(axis=0)
    sel = metrics.textured_mask(s.truth) & ~s.edges
    assert sel.mean() > 0.4
    err = np.abs(best - np.rint(s.depth))[sel]
    assert (err <= 1).mean() > 0.9
    assert (err == 0).mean() > 0.8


def test_truth_is_not_any_frame(mixed):
    for f in mixed.frames:
        assert metrics.psnr(mixed.truth, f) < 35.0
        assert np.abs(f - mixed.truth).max() > 0.05


def test_in_focus_pixels_are_exact_without_noise(steps_clean):
    s = steps_clean
    for k, f in enumerate(s.frames):
        # Pixels of a layer with |depth - k| <= 0.5 (radius <= 0.5 px) far from every other layer.
        far_from_others = np.zeros(s.depth.shape, bool)
        for lab in np.unique(s.labels):
            far_from_others |= ndimage.distance_transform_edt(s.labels == lab) > 9
        sel = far_from_others & (np.abs(s.depth - k) <= 0.5)
        if sel.any():
            np.testing.assert_allclose(f[sel], s.truth[sel], atol=1e-6)
        out = far_from_others & (np.abs(s.depth - k) >= 1.5)
        if out.any():  # and pixels well out of focus are not
            assert np.abs(f[out] - s.truth[out]).mean() > 0.005


def test_blur_grows_with_distance_from_focus(steps_clean):
    s = steps_clean
    tested = 0
    for lab in np.unique(s.labels):
        interior = ndimage.distance_transform_edt(s.labels == lab) > 12  # beyond the blur of any neighbour
        if interior.sum() < 200:
            continue
        d = float(s.depth[interior][0])
        focus = int(np.rint(d))
        e = np.array([_energy(f)[interior].mean() for f in s.frames])
        assert e.argmax() == focus
        assert np.all(np.diff(e[focus:]) < 0) and np.all(np.diff(e[: focus + 1]) > 0), (d, e)
        tested += 1
    assert tested >= 2


# ---------------------------------------------------------------- occlusion


def test_occlusion_near_blur_spreads_over_far_but_not_the_reverse(steps_clean):
    s = steps_clean
    labs = np.unique(s.labels)
    level = {lab: float(s.depth[s.labels == lab][0]) for lab in labs}
    # The adjacent pair with the largest depth difference (and a boundary of at least 40 px).
    best = None
    for near in labs:
        for far in labs:
            if level[near] <= level[far]:
                continue
            touching = ndimage.binary_dilation(s.labels == near) & (s.labels == far)
            if touching.sum() >= 40 and (best is None or level[near] - level[far] > best[2]):
                best = (near, far, level[near] - level[far])
    near, far, gap = best
    assert gap > 3.0
    bpf = s.params["blur_per_frame"]
    k_far, k_near = int(np.rint(level[far])), int(np.rint(level[near]))
    r_near = bpf * abs(level[near] - k_far)  # blur radius of the near layer in the far-focused frame
    dist_to_near = ndimage.distance_transform_edt(s.labels != near)
    dist_to_far = ndimage.distance_transform_edt(s.labels != far)
    others = ndimage.distance_transform_edt(np.isin(s.labels, [near, far]))  # distance to a third layer
    clear = others > 14
    far_band = (s.labels == far) & (dist_to_near <= r_near / 2) & clear
    far_control = (s.labels == far) & (dist_to_near > r_near + 2) & clear
    near_band = (s.labels == near) & (dist_to_far <= 3) & clear
    assert far_band.sum() > 50 and far_control.sum() > 50 and near_band.sum() > 30

    # Focused on the far layer: the blurred near layer spreads over the far side of the edge...
    f = s.frames[k_far]
    spread = np.abs(f[far_band] - s.truth[far_band]).mean()
    control = np.abs(f[far_control] - s.truth[far_control]).mean()
    assert spread > 0.003 and spread > 10 * control, (spread, control)
    # ... focused on the near layer: the blurred far layer does not leak into the near side.
    f = s.frames[k_near]
    np.testing.assert_allclose(f[near_band], s.truth[near_band], atol=1e-6)
    # while the far side next to the edge is blurred, not a copy of the truth.
    far_edge = (s.labels == far) & (dist_to_near <= 3) & clear
    assert np.abs(f[far_edge] - s.truth[far_edge]).mean() > 0.005


def test_noise_has_its_own_random_stream():
    noisy = synth.make_stack(scene="coffee", depth="steps", seed=1, max_blur=3.5, **SMALL)
    clean = synth.make_stack(scene="coffee", depth="steps", seed=1, max_blur=3.5, noise=False, **SMALL)
    assert np.array_equal(noisy.depth, clean.depth)  # noise has its own random stream
    diff = np.concatenate([(n - c).ravel() for n, c in zip(noisy.frames, clean.frames)])
    assert 0.002 < diff.std() < 0.02


# ---------------------------------------------------------------- noise


@pytest.mark.parametrize("level", [0.005, 0.2, 0.6])
def test_noise_variance_is_poisson_gaussian(level):
    gain, read_noise = 4000.0, 0.001
    s = synth.make_stack(
        scene=np.full((128, 160, 3), level), depth="slope", n_frames=3, gain=gain, read_noise=read_noise, seed=5
    )
    x = np.stack(s.frames).astype(np.float64)
    expected = level / gain + read_noise**2
    assert abs(x.mean() - level) < 0.01 * level
    assert abs(x.var() / expected - 1.0) < 0.1


# ---------------------------------------------------------------- edges


def test_edges_mark_depth_discontinuities_only(mixed):
    s = mixed
    boundary = np.zeros(s.labels.shape, bool)
    for axis in (0, 1):
        cross = np.diff(s.labels, axis=axis) != 0
        sl0 = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
        sl1 = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
        boundary[sl0] |= cross
        boundary[sl1] |= cross
    dist = ndimage.distance_transform_edt(~boundary)
    band = s.params["band"]
    assert np.array_equal(s.edges, dist <= band)
    for depth in ("slope", "dome"):
        smooth = synth.make_stack(depth=depth, shape=(64, 96), n_frames=6, noise=False)
        assert not smooth.edges.any()


def test_make_edges_on_a_hand_made_map():
    depth = np.zeros((40, 40))
    depth[:, 20:] = 5.0
    depth += np.linspace(0, 1, 40)[None, :]  # a gentle slope is not an edge
    edges = synth.make_edges(depth, 3)
    expected = np.zeros((40, 40), bool)
    expected[:, 16:24] = True  # boundary pixels are columns 19 and 20
    np.testing.assert_array_equal(edges, expected)


# ---------------------------------------------------------------- bench frames


def test_bench_frames():
    frames = list(synth.make_bench_frames(3, (96, 128), seed=4))
    again = list(synth.make_bench_frames(3, (96, 128), seed=4))
    assert len(frames) == 3
    for f, g in zip(frames, again):
        assert f.shape == (96, 128, 3) and f.dtype == np.uint16
        assert np.array_equal(f, g)
        assert f.std() > 2000  # a picture, not a flat field
    assert not np.array_equal(frames[0], frames[2])
    (gray,) = synth.make_bench_frames(1, (40, 50), channels=1, dtype=np.uint8)
    assert gray.shape == (40, 50, 1) and gray.dtype == np.uint8


# ---------------------------------------------------------------- motion

MOTION = {"breathing": 0.02, "shift": 5.0, "rotation": 0.3}
MOVING = {"scene": "astronaut", "depth": "mixed", "seed": 3, "shape": (96, 128), "n_frames": 20, "noise": False}


@pytest.fixture(scope="module")
def still_and_moving():
    return synth.make_stack(**MOVING), synth.make_stack(**MOVING, **MOTION)


def _homogeneous(a):
    return np.vstack([a, [0.0, 0.0, 1.0]])


def _unwarp(frame, a):
    """Frame k resampled onto the reference grid: out(p) = frame_k(A_k p)."""
    h, w = frame.shape[:2]
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    q = a @ np.stack([cols.ravel(), rows.ravel(), np.ones(h * w)])
    return np.stack(
        [ndimage.map_coordinates(frame[..., c], [q[1], q[0]], order=3, mode="reflect") for c in range(frame.shape[2])],
        axis=-1,
    ).reshape(frame.shape)


def test_motion_transforms_are_recorded(still_and_moving):
    still, moving = still_and_moving
    n, ref = MOVING["n_frames"], MOVING["n_frames"] // 2
    h, w = MOVING["shape"]
    assert moving.reference == ref and moving.params["reference"] == ref
    assert moving.params["breathing"] == 0.02 and moving.params["shift"] == 5.0 and moving.params["rotation"] == 0.3
    assert len(moving.transforms) == n
    assert all(a.shape == (2, 3) and a.dtype == np.float64 for a in moving.transforms)
    assert np.array_equal(moving.transforms[ref], np.eye(2, 3))
    centre = np.array([(w - 1) / 2, (h - 1) / 2, 1.0])
    margin = moving.params["margin"]
    corners = np.array([[0, w - 1, 0, w - 1], [0, 0, h - 1, h - 1], [1, 1, 1, 1]], float)
    angles, shifts = [], []
    for k, a in enumerate(moving.transforms):
        m = np.sqrt(np.linalg.det(a[:, :2]))
        assert m == pytest.approx(1 + 0.02 * (k - ref) / (n - 1), abs=1e-12)
        angles.append(np.degrees(np.arctan2(a[1, 0], a[0, 0])))
        shifts.append(a @ centre - centre[:2])  # the image centre moves by the translation only
        # every frame's field of view lies on the rendered canvas (no empty corners)
        src = np.linalg.inv(_homogeneous(a))[:2] @ corners
        assert src.min() >= -margin + 2 and src[0].max() <= w - 1 + margin - 2 and src[1].max() <= h - 1 + margin - 2
    angles, shifts = np.array(angles), np.array(shifts)
    assert np.abs(angles).max() <= 0.3 and np.abs(angles).max() > 0.1
    assert np.abs(shifts).max() <= 5.0 and np.abs(shifts).max() > 3.0
    assert np.diff([np.linalg.det(a[:, :2]) for a in moving.transforms]).min() > 0  # magnification grows with k
    # without motion: all identity, reference the middle frame
    assert all(np.array_equal(a, np.eye(2, 3)) for a in still.transforms) and still.reference == ref
    assert still.params["margin"] == 0 and still.params["breathing"] == 0.0


def test_motion_unwarps_to_the_still_rendering(still_and_moving):
    still, moving = still_and_moving
    # geometry and truth are in reference coordinates and do not move with motion on
    for name in ("truth", "depth", "edges", "labels"):
        assert np.array_equal(getattr(still, name), getattr(moving, name)), name
    h, w = MOVING["shape"]
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    inner = (slice(12, -12), slice(12, -12))
    for k, (f_still, f_moving, a) in enumerate(zip(still.frames, moving.frames, moving.transforms)):
        assert f_moving.shape == f_still.shape and f_moving.dtype == np.float32
        assert f_moving.min() >= 0.0 and f_moving.max() <= 1.0
        back = _unwarp(f_moving, a)
        assert metrics.psnr(f_still[inner], back[inner]) > 35.0, k
        # up to the frame's own border (no empty corners): wherever A_k p lands 3 px inside frame k
        q = np.tensordot(a, np.stack([cols, rows, np.ones((h, w))]), 1)
        seen = (q[0] >= 3) & (q[0] <= w - 4) & (q[1] >= 3) & (q[1] <= h - 4)
        seen &= (cols >= 3) & (cols <= w - 4) & (rows >= 3) & (rows <= h - 4)
        assert metrics.psnr(f_still[seen], back[seen]) > 33.0, k
        if k != moving.reference:  # the frames did move, and the inverse convention does not fit
            good = metrics.psnr(f_still[inner], back[inner])
            assert metrics.psnr(f_still[inner], f_moving[inner]) < good - 8.0, k
            wrong = _unwarp(f_moving, np.linalg.inv(_homogeneous(a))[:2])
            assert metrics.psnr(f_still[inner], wrong[inner]) < good - 8.0, k


def test_breathing_makes_the_scene_larger_in_later_frames():
    kw = {**MOVING, "n_frames": 9, "shape": (96, 160)}
    still = synth.make_stack(**kw)
    grown = synth.make_stack(breathing=0.1, reference=0, **kw)  # the last frame is 10 % larger
    a = grown.transforms[-1]
    assert np.allclose(a[:, :2], 1.1 * np.eye(2))
    b, g = metrics.luminance(still.frames[-1]), metrics.luminance(grown.frames[-1])
    rows = slice(36, 60)
    for c0, c1 in ((8, 32), (128, 152)):  # left and right of the centre (col 79.5)
        errs = {s: np.mean((b[rows, c0:c1] - np.roll(g, -s, axis=1)[rows, c0:c1]) ** 2) for s in range(-8, 9)}
        found = min(errs, key=errs.get)  # grown(x + found) ~ still(x)
        expected = 0.1 * ((c0 + c1 - 1) / 2 - (kw["shape"][1] - 1) / 2)  # the patch centre moves outward, 6 px
        assert abs(found - expected) <= 1.0, (c0, found, expected)


def test_motion_off_is_unchanged_and_motion_is_deterministic():
    kw = {"scene": "chelsea", "depth": "steps", "seed": 4, "shape": (64, 80), "n_frames": 5}
    plain = synth.make_stack(**kw)
    off = synth.make_stack(breathing=0.0, shift=0.0, rotation=0.0, reference=1, **kw)
    assert off.reference == 1 and all(np.array_equal(a, np.eye(2, 3)) for a in off.transforms)
    for name in ("truth", "depth", "edges", "labels"):
        assert getattr(plain, name).tobytes() == getattr(off, name).tobytes()
    assert all(f.tobytes() == g.tobytes() for f, g in zip(plain.frames, off.frames))

    one = synth.make_stack(**kw, **MOTION)
    two = synth.make_stack(**kw, **MOTION)
    other = synth.make_stack(**{**kw, "seed": 5}, **MOTION)
    assert all(f.tobytes() == g.tobytes() for f, g in zip(one.frames, two.frames))
    assert all(np.array_equal(a, b) for a, b in zip(one.transforms, two.transforms))
    assert not all(np.array_equal(a, b) for a, b in zip(one.transforms, other.transforms))
    # the noise stream does not move with motion on: the first frame gets the same normal draws (later frames
    # drift apart, as the number of exact Poisson draws for dark pixels depends on the signal)
    clean = synth.make_stack(**kw, noise=False, **MOTION)
    plain_clean = synth.make_stack(**kw, noise=False)
    n_moving, n_still = (one.frames[0] - clean.frames[0]).ravel(), (plain.frames[0] - plain_clean.frames[0]).ravel()
    assert np.corrcoef(n_moving, n_still)[0, 1] > 0.9


def test_motion_bad_arguments():
    for kwargs in (
        {"breathing": 1.0},
        {"breathing": float("nan")},
        {"shift": -1.0},
        {"shift": float("inf")},
        {"rotation": -0.1},
        {"rotation": 90.0},
        {"reference": 3},
        {"reference": -1},
        {"reference": 1.5},
        {"shift": "2"},
    ):
        with pytest.raises(InputError):
            synth.make_stack(shape=(32, 32), n_frames=3, **kwargs)


def test_corner_error():
    eye = [np.eye(2, 3)] * 3
    moved = [np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 4.0]])] * 3
    assert synth.corner_error(eye, eye, (40, 60)) == 0.0
    assert synth.corner_error(moved, eye, (40, 60, 3)) == pytest.approx(5.0)
    assert synth.corner_error([_homogeneous(a) for a in moved], eye, (40, 60)) == pytest.approx(5.0)
    # a 1 % scale about the top-left corner: corners move by 0, 0.59, 0.39 and hypot(0.59, 0.39) px
    scaled = [np.array([[1.01, 0.0, 0.0], [0.0, 1.01, 0.0]])]
    expected = np.sqrt((0.59**2 + 0.39**2 + 0.59**2 + 0.39**2) / 4)
    assert synth.corner_error(scaled, eye[:1], (40, 60)) == pytest.approx(expected)
    with pytest.raises(InputError):
        synth.corner_error(eye, eye[:2], (40, 60))


# ---------------------------------------------------------------- supersampling


@pytest.fixture(scope="module")
def supersampled():
    kw = {**MOVING, "n_frames": 7, "shape": (90, 120), "noise": False, "supersample": 2}
    return synth.make_stack(**kw), synth.make_stack(**kw, breathing=0.02, shift=5.0, rotation=0.3)


def test_supersampled_stack_is_the_block_mean_of_the_fine_rendering(supersampled):
    still, _ = supersampled
    fine = synth.make_stack(**{**MOVING, "n_frames": 7, "shape": (180, 240), "noise": False,
                               "max_blur": 2 * MOVING.get("max_blur", 6.0)})
    def block(a):
        return a.reshape(90, 2, 120, 2, *a.shape[2:]).mean(axis=(1, 3))
    np.testing.assert_allclose(still.truth, block(fine.truth), atol=1e-6)
    for f_still, f_fine in zip(still.frames, fine.frames):
        np.testing.assert_allclose(f_still, block(f_fine), atol=1e-6)
    np.testing.assert_allclose(still.depth, block(fine.depth), atol=1e-5)
    assert still.truth.shape == (90, 120, 3) and still.params["supersample"] == 2
    assert still.params["max_blur"] == MOVING.get("max_blur", 6.0)


def test_supersampled_transforms_are_on_the_output_grid(supersampled):
    """Noise-free moving frames unwarp onto the still ones with the recorded (output-grid)
    transforms (the fine grid's pixel centres sit at 2x + 0.5) to > 40 dB (41-57 measured; the
    spline unwarp does not restore the box average exactly); a quarter pixel off costs over 5 dB
    (7.7-19 measured)."""
    still, moving = supersampled
    inner = (slice(10, -10), slice(10, -10))
    for k, (f_still, f_moving, a) in enumerate(zip(still.frames, moving.frames, moving.transforms)):
        if k == moving.reference:
            assert np.array_equal(a, np.eye(2, 3))
            continue
        good = metrics.psnr(f_still[inner], _unwarp(f_moving, a)[inner])
        assert good > 40.0, (k, good)
        shifted = a.copy()
        shifted[0, 2] += 0.25  # a quarter pixel off shows
        assert metrics.psnr(f_still[inner], _unwarp(f_moving, shifted)[inner]) < good - 5.0, k


def test_supersample_bad_arguments():
    for bad in (0, 5, 1.5, True, "2"):
        with pytest.raises(InputError, match="supersample"):
            synth.make_stack(n_frames=2, shape=(32, 32), supersample=bad)
    # the other arguments' messages name the values given, not the fine grid's doubled ones
    for kw, msg in (({"max_blur": -1.0}, "got -1.0"), ({"shift": -2.0}, "got -2.0"), ({"optics": 5.0}, "from 0 to 4 px with supersample=2.*got 5.0"),
                    ({"shape": (10, 40)}, r"got \(10, 40\)")):
        with pytest.raises(InputError, match=msg):
            synth.make_stack(n_frames=2, shape=kw.pop("shape", (32, 32)), supersample=2, **kw)
