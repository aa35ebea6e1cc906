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
    """Each channel of (C, H, W) frames fused on its own: one single-channel fusion (``make()``)
    whose frame scratch (its pyramid levels, scores, scratch planes) every channel shares, and a
    running state per channel (``stack_state``), put in place before that channel is folded. The
    frame is written into ``input``; each channel is copied into the fusion's input and folded.
    ``depth()``, ``contrast()``, ``height_index()`` give one plane per channel; ``collapse()`` the
    (C, H, W) image."""

    def __init__(self, be, make, channels: int, height: int, width: int):
        self.be = be
        self.channels = channels
        self.input = be.empty((channels, height, width), np.float32)
        self.worker = make()
        self.stacks = [self.worker.stack_state()] + [self.worker.new_stack_state() for _ in range(channels - 1)]
        self.count = 0

    def _each(self, method: str, **kwargs) -> list:
        """``method`` of the fusion on each channel's state in turn (the states kept up to date)."""
        out = []
        for ch in range(self.channels):
            self.worker.use_stack_state(self.stacks[ch])
            out.append(getattr(self.worker, method)(**kwargs))
            self.stacks[ch] = self.worker.stack_state()
        return out

    def use_input(self, buffer) -> None:
        """Make ``buffer`` (C, H, W) float32 the next ``fold``'s input (``FrameLevels.use_input``)."""
        self.input = buffer

    def fold(self, k: int) -> None:
        for ch in range(self.channels):
            self.worker.use_stack_state(self.stacks[ch])
            self.be.copy(self.input[ch:ch + 1], self.worker.input)
            self.worker.fold(k)
            self.stacks[ch] = self.worker.stack_state()
        self.count += 1

    def contrast(self):
        """The height map's confidence per channel (a list), or None (see the single states')."""
        planes = self._each("contrast")
        return None if planes[0] is None else planes

    def height_index(self):
        """The height map's plane index per channel (a list), or None (see the single states')."""
        planes = self._each("height_index")
        return None if planes[0] is None else planes

    def depth(self):
        """(list of depth planes, list of confidence planes), one per channel."""
        pairs = self._each("depth")
        return [d for d, _ in pairs], [c for _, c in pairs]

    def collapse(self):
        """The fused (C, H, W) image; the states are released channel by channel, the scratch last."""
        out = self.input
        for ch in range(self.channels):
            self.worker.use_stack_state(self.stacks[ch])
            self.stacks[ch] = None
            self.be.copy(self.worker.collapse(release=ch == self.channels - 1), out[ch:ch + 1])
        self.input = self.worker = None
        return out


def check_per_channel(method: str) -> None:
    if method == "depthmap":
        raise InputError("per_channel works with the soft and pyramid methods; the depthmap method's second pass "
                         "blends all channels by one depth map — use --method soft")
