"""The napari plugin (``pip install 'gpustack[napari]'``): a reader and a fusion widget.

- ``_reader``: a stack folder, an OME-TIFF, an ImageJ hyperstack (or a vendor file with the
  microscopy extra) opened as one z-stack layer, (Z, C, Y, X) or (Z, Y, X), with its scale in
  microns and the channel names in its metadata.
- ``_widget``: fuses the selected layer (Z the first axis, channels kept) off the UI thread with
  progress, and adds the fused image and the height map with the layer's scale.

The work is in ``_core`` (pure functions on arrays and paths, no napari or Qt import), which the
tests run without Qt; the manifest, ``napari.yaml``, is checked with ``npe2 validate``.
"""
