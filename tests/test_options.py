"""StackOptions: every number finite and in range, the reference a frame index, the output a file."""

import math

import numpy as np
import pytest

from gpustack import InputError, StackOptions


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e999, "0.5", True, None])
def test_contrast_threshold_must_be_a_finite_number(value):
    with pytest.raises(InputError, match=r"^contrast_threshold must be a number from 0 to 1; got "):
        StackOptions(contrast_threshold=value)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 0.0, -2.5, "2", True])
def test_z_step_must_be_a_positive_finite_number(value):
    with pytest.raises(InputError, match=r"^z_step must be a positive, finite number of microns; got "):
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
