"""The napari plugin without Qt: the manifest (``npe2 validate``), the reader and the widget's work
(``gpustack.napari._core``) on a synthetic OME-TIFF."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpustack import synth
from gpustack.napari import _core
from gpustack.napari._reader import napari_get_reader

MANIFEST = Path(__file__).resolve().parents[1] / "gpustack" / "napari" / "napari.yaml"


def test_manifest_is_valid_for_npe2():
    pytest.importorskip("npe2")
    run = subprocess.run([sys.executable, "-W", "ignore", "-m", "npe2", "validate", str(MANIFEST)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "valid" in run.stdout, run.stdout + run.stderr


def test_manifest_names_functions_that_exist():
    yaml = pytest.importorskip("yaml")

    manifest = yaml.safe_load(MANIFEST.read_text())
    reader = next(c for c in manifest["contributions"]["commands"] if c["id"] == "gpustack.read_stack")
    module, func = reader["python_name"].split(":")
    assert getattr(__import__(module, fromlist=[func]), func) is napari_get_reader
    widget = next(c for c in manifest["contributions"]["commands"] if c["id"] == "gpustack.fuse_widget")
    assert widget["python_name"] == "gpustack.napari._widget:FuseWidget"
    assert "FuseWidget" in (MANIFEST.parent / "_widget.py").read_text()  # importing it needs napari and Qt


@pytest.fixture(scope="module")
def ome(tmp_path_factory):
    st = synth.make_microscopy_stack(n_planes=6, shape=(64, 80), offsets=(0, 0), z_step=1.5, pixel_size=0.4)
    return st, st.write_ome(tmp_path_factory.mktemp("napari") / "z.ome.tif")


def test_reader_opens_an_ome_tiff_as_one_z_stack_layer_with_its_scale(ome):
    st, path = ome
    assert napari_get_reader(str(path.parent / "notes.txt")) is None
    (data, kwargs, kind), = napari_get_reader(str(path))(str(path))
    assert kind == "image" and data.shape == (6, 2, 64, 80) and data.dtype == np.uint16
    np.testing.assert_array_equal(data, st.planes)
    assert kwargs["scale"] == (1.5, 1.0, 0.4, 0.4) and kwargs["axis_labels"] == ("z", "c", "y", "x")
    assert kwargs["metadata"]["gpustack"]["channel_names"] == ["DAPI", "GFP"]


def test_reader_opens_a_folder_of_photographs_as_rgb(tmp_path):
    import imageio.v3 as iio

    for k, frame in enumerate(synth.make_stack(n_frames=3, shape=(48, 64), seed=2).as_uint8()):
        iio.imwrite(tmp_path / f"f{k}.png", frame)
    (data, kwargs, _), = _core.read_stack(tmp_path)
    assert data.shape == (3, 48, 64, 3) and kwargs["rgb"] and kwargs["scale"] == (1.0, 1.0, 1.0)


def test_fuse_layer_gives_the_fused_image_and_the_height_map_with_the_layer_scale(ome):
    st, path = ome
    (data, kwargs, _), = _core.read_stack(path)
    seen = []
    layers = _core.fuse_layer(data, scale=kwargs["scale"], metadata=kwargs["metadata"], name="z",
                              progress=lambda d, t: seen.append((d, t)), focus_channel="DAPI")
    (fused, fk, _), (height, hk, _) = layers
    assert fused.shape == (2, 64, 80) and fused.dtype == np.uint16 and fk["scale"] == (1.0, 0.4, 0.4)
    assert height.shape == (64, 80) and hk["scale"] == (0.4, 0.4)
    assert seen[-1] == (6, 6) and len(seen) == 6
    ok = ~np.isnan(height)
    assert np.median(np.abs(height - st.height[0])[ok]) < 1.5 / 4  # microns, as the file says


def test_fuse_layer_without_a_z_scale_gives_no_height_map():
    frames = np.stack([synth.make_stack(n_frames=3, shape=(40, 48), seed=1).as_uint16()[k][..., 0] for k in range(3)])
    layers = _core.fuse_layer(frames, name="plain")
    assert len(layers) == 1 and layers[0][0].shape == (40, 48)
