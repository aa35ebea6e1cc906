"""Backend-neutral step logic: what to compute, in what order. Stages call only Backend ops."""
