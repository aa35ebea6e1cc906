"""Multi-channel stacks (microscopy): which channel the focus is judged on, and per-channel fusion.

By default every fusion state sums the focus energies of all channels, and every channel of a
pixel comes from the same frame(s): the channels stay registered. ``--focus-channel`` judges focus
on one channel (``focus_view`` in ``stages.fuse``). ``--per-channel`` (:class:`PerChannelFusion`)
fuses each channel on its own, with its own depth map: for samples whose channels lie at different
depths (a membrane stain above a nuclear one).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def resolve_channel(focus_channel, names, *, where: str) -> int | None:
    """The 0-based index of ``focus_channel`` (a name or an index) among the channel ``names``;
    InputError naming ``where`` and listing the names otherwise."""
    if focus_channel is None:
        return None
    listed = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
    if isinstance(focus_channel, int):
        if focus_channel < len(names):
            return focus_channel
        what = "has no C axis (1 channel)" if len(names) == 1 else f"has {len(names)} channels"
        raise InputError(f"{where}: --focus-channel {focus_channel} asked for, but the stack {what} ({listed}); "
                         f"give one of those")
    matches = [i for i, n in enumerate(names) if n == focus_channel]
    if not matches:
        folded = [i for i, n in enumerate(names) if n.casefold() == focus_channel.casefold()]
        matches = folded if len(folded) == 1 else []
    if not matches:
        raise InputError(f"{where}: no channel named {focus_channel!r}; the channels are {listed} — give a name "
                         f"or an index from that list")
    return matches[0]


class PerChannelFusion:
    """Each channel of (C, H, W) frames fused by its own single-channel fusion state (``make()``
    returns one): the frame is written into ``input``, and each channel copied into its state's
    input before that state folds it. ``depth()`` gives one depth and confidence plane per
    channel; ``collapse()`` the (C, H, W) image."""

    def __init__(self, be, make, channels: int, height: int, width: int):
        self.be = be
        self.channels = channels
        self.input = be.empty((channels, height, width), np.float32)
        self.parts = [make() for _ in range(channels)]
        self.count = 0

    def fold(self, k: int) -> None:
        for ch, part in enumerate(self.parts):
            self.be.copy(self.input[ch:ch + 1], part.input)
            part.fold(k)
        self.count += 1

    def contrast(self):
        """The height map's confidence per channel (a list), or None (see the single states')."""
        planes = [part.contrast() for part in self.parts]
        return None if planes[0] is None else planes

    def height_index(self):
        """The height map's plane index per channel (a list), or None (see the single states')."""
        planes = [part.height_index() for part in self.parts]
        return None if planes[0] is None else planes

    def depth(self):
        """(list of depth planes, list of confidence planes), one per channel."""
        pairs = [part.depth() for part in self.parts]
        return [d for d, _ in pairs], [c for _, c in pairs]

    def collapse(self):
        """The fused (C, H, W) image; the states are released channel by channel."""
        out = self.input
        for ch in range(self.channels):
            part, self.parts[ch] = self.parts[ch], None
            self.be.copy(part.collapse(), out[ch:ch + 1])
        self.input = None
        return out


def check_per_channel(method: str) -> None:
    if method == "depthmap":
        raise InputError("per_channel works with the soft and pyramid methods; the depthmap method's second pass "
                         "blends all channels by one depth map — use --method soft")
