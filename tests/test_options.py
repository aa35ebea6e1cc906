"""StackOptions: every number finite and in range, the reference a frame index, the output a file."""

import math

import numpy as np
import pytest

from gpustack import InputError, StackOptions


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e999, "0.5", True, None])
def test_contrast_threshold_must_be_a_finite_number(value):
    with pytest.raises(InputError, match=r"^contrast_threshold must be a number from 0 to 1; got "):
        StackOptions(contrast_threshold=value)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 0.0, -2.5, "abc", "-2um", "inf", "nan nm", True, None])
def test_z_step_must_be_a_positive_finite_number(value):
    if value is None:
        return
    with pytest.raises(InputError, match=r"^z_step must be a positive, finite number of microns, or a length such as 2.5um, 0.5 µm or 500nm; got "):
        StackOptions(z_step=value)


def test_finite_numbers_of_any_real_type_are_accepted():
    assert StackOptions(z_step=2, contrast_threshold=np.float32(0.25)).z_step == 2
    assert StackOptions(z_step=np.float64(0.5)).z_step == 0.5


@pytest.mark.parametrize("value", [-1, -7, 1.0, "2", True])
def test_reference_must_be_a_frame_index_from_zero(value):
    with pytest.raises(InputError, match=r"^reference must be a frame index: 0 for the first frame in shot order"):
        StackOptions(reference=value)
    assert StackOptions(reference=0).reference == 0


def test_a_folder_as_output_is_named_as_one(tmp_path):
    with pytest.raises(InputError, match=rf"^output {tmp_path} is a folder; give the file to write, such as "
                                         rf"{tmp_path / 'fused.tif'} \(one of .jpeg, .jpg, .png, .tif, .tiff\)$"):
        StackOptions(output=tmp_path)
    with pytest.raises(InputError, match=r"out: no extension; use one of .jpeg, .jpg, .png, .tif, .tiff$"):
        StackOptions(output=tmp_path / "out")
    with pytest.raises(InputError, match=r"fused.bmp: unknown extension '.bmp'"):
        StackOptions(output=tmp_path / "fused.bmp")


@pytest.mark.parametrize("text, microns", [("2.5um", 2.5), ("0.5 µm", 0.5), ("0.5 μm", 0.5), ("500nm", 0.5),
                                           ("2", 2.0), ("1e-3 mm", 1.0), (" 3 microns ", 3.0), (0.25, 0.25)])
def test_lengths_take_units(text, microns):
    opts = StackOptions(z_step=text, pixel_size=text)
    assert opts.z_step == pytest.approx(microns) and opts.pixel_size == pytest.approx(microns)


def test_an_unknown_unit_is_named():
    with pytest.raises(InputError, match=r"^pixel_size: unknown unit 'furlongs' in '3 furlongs'; use one of nm"):
        StackOptions(pixel_size="3 furlongs")


@pytest.mark.parametrize("changes, says", [
    ({"time": -1}, "time must be a whole number from 0"),
    ({"position": 1.5}, "position must be a whole number from 0"),
    ({"focus_channel": -1}, "focus_channel must be a channel name or a 0-based channel index"),
    ({"focus_channel": "DAPI", "per_channel": True}, "focus_channel and per_channel exclude each other"),
    ({"confidence_threshold": math.nan}, "confidence_threshold must be a number from 0 to 1"),
    ({"height_map": "h.png"}, "height map h.png: must be a .tif or .tiff file"),
])
def test_microscopy_options_are_checked(changes, says):
    with pytest.raises(InputError, match="^" + says):
        StackOptions(**changes)


def test_a_focus_channel_given_as_digits_is_an_index():
    assert StackOptions(focus_channel="1").focus_channel == 1
    assert StackOptions(focus_channel="GFP").focus_channel == "GFP"
    assert StackOptions(output="a/b.OME.TIF").output_format == "ome-tiff"


@pytest.mark.parametrize("name", ["depth_map", "height_map", "confidence_map"])
def test_a_map_to_write_needs_the_maps(name):
    with pytest.raises(InputError, match="maps=False makes no maps; leave maps at True to write it"):
        StackOptions(maps=False, **{name: "m.tif"})
    assert StackOptions(maps=True, **{name: "m.tif"}).maps
