"""napari widget: fuse the selected z-stack layer off the UI thread, with progress (needs napari)."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, Label, LineEdit, ProgressBar, PushButton
from napari.qt.threading import thread_worker

from ..options import METHODS
from ._core import fuse_layer


class FuseWidget(Container):
    """Layer, method, focus channel, per-channel; "Fuse" runs ``_core.fuse_layer`` on a worker
    thread, the progress bar follows the planes, the results are added as layers."""

    def __init__(self, viewer):
        super().__init__()
        self.viewer = viewer
        self.layer = ComboBox(label="z-stack", choices=self._layers)
        self.method = ComboBox(label="method", choices=list(METHODS), value="soft")
        self.focus = LineEdit(label="focus channel", value="")
        self.per_channel = CheckBox(text="each channel by its own focus")
        self.run = PushButton(text="Fuse")
        self.bar = ProgressBar(value=0, min=0, max=1)
        self.status = Label(value="")
        self.extend([self.layer, self.method, self.focus, self.per_channel, self.run, self.bar, self.status])
        self.run.changed.connect(self._start)
        viewer.layers.events.inserted.connect(lambda _: self.layer.reset_choices())
        viewer.layers.events.removed.connect(lambda _: self.layer.reset_choices())

    def _layers(self, _=None):
        return [layer.name for layer in self.viewer.layers if layer.__class__.__name__ == "Image"]

    def _start(self):
        layer = self.viewer.layers[self.layer.value]
        options = {"method": self.method.value, "per_channel": self.per_channel.value}
        if self.focus.value.strip():
            options["focus_channel"] = self.focus.value.strip()
        self.run.enabled = False
        self.status.value = "fusing..."
        worker = _fuse(layer.data, layer.scale, layer.rgb, dict(layer.metadata), layer.name, options)
        worker.yielded.connect(self._progress)
        worker.returned.connect(self._done)
        worker.errored.connect(self._failed)
        worker.start()

    def _progress(self, done_total):
        done, total = done_total
        self.bar.max, self.bar.value = total, done

    def _done(self, layers):
        for data, kwargs, _kind in layers:
            self.viewer.add_image(data, **kwargs)
        self.run.enabled = True
        self.status.value = "done"

    def _failed(self, exc):
        self.run.enabled = True
        self.status.value = f"error: {exc}"


@thread_worker
def _fuse(data, scale, rgb, metadata, name, options):
    """A generator worker: yields (done, total) per plane, returns the layers."""
    import queue
    import threading

    events: queue.Queue = queue.Queue()
    out = {}

    def work():
        try:
            out["layers"] = fuse_layer(data, scale=scale, rgb=rgb, metadata=metadata, name=name,
                                       progress=lambda d, t: events.put((d, t)), **options)
        except BaseException as exc:  # noqa: BLE001 - handed to the UI thread
            out["error"] = exc
        events.put(None)

    threading.Thread(target=work, daemon=True).start()
    while (item := events.get()) is not None:
        yield item
    if "error" in out:
        raise out["error"]
    return out["layers"]
