#!/usr/bin/env python
"""By hand: the napari plugin in a real napari, headless (offscreen Qt, no OpenGL canvas).

    QT_QPA_PLATFORM=offscreen python bench/napari_check.py     (napari, magicgui and a Qt binding installed)

Registers ``gpustack/napari/napari.yaml`` with npe2, opens a synthetic two-channel OME-TIFF through
the plugin's reader into a ``ViewerModel`` (napari's viewer without the OpenGL canvas, which an
offscreen Qt cannot draw), runs the "Focus stack" widget (its worker thread, its progress bar) and
prints the layers it added with their scales. Not in CI: napari with Qt is about 500 MB.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import numpy as np
    from napari.components import ViewerModel
    from npe2 import PluginManager, PluginManifest
    from qtpy.QtWidgets import QApplication

    from gpustack import synth
    from gpustack.napari._widget import FuseWidget

    app = QApplication.instance() or QApplication([])
    PluginManager.instance().register(PluginManifest.from_file(ROOT / "gpustack" / "napari" / "napari.yaml"))
    st = synth.make_microscopy_stack(n_planes=6, shape=(64, 80), offsets=(0, 0), z_step=1.5, pixel_size=0.4)
    path = st.write_ome(Path(tempfile.mkdtemp()) / "stack.ome.tif")
    viewer = ViewerModel()
    viewer.open(str(path), plugin="gpustack")
    print("opened", [(layer.name, layer.data.shape, tuple(map(float, layer.scale))) for layer in viewer.layers])
    widget = FuseWidget(viewer)
    widget.native.show()
    widget.focus.value = "DAPI"
    widget.run.clicked.emit()
    t0 = time.time()
    while widget.status.value in ("", "fusing...") and time.time() - t0 < 120:
        app.processEvents()
        time.sleep(0.02)
    print("status", widget.status.value, "progress", widget.bar.value, "/", widget.bar.max)
    for layer in viewer.layers:
        print("layer", layer.name, layer.data.shape, tuple(float(np.round(s, 3)) for s in layer.scale))
    return 0 if widget.status.value == "done" and len(viewer.layers) == 3 else 1


if __name__ == "__main__":
    sys.exit(main())
