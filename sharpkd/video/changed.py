"""Recompute only the windows whose input changed since the previous frame.

:class:`ChangedWindows` wraps a sharpener (:class:`sharpkd.app.sharpen.Sharpener`: ``model_for``,
``device``, ``tile``, ``overlap``, ``strength``) and runs each frame on the window grid
:func:`sharpkd.inference.tiled.run_model` uses for that ``tile`` and ``overlap``: a window whose
input pixels are exactly those of the same window in the previous frame keeps the previous
output in its core; every other window runs through the model as
:func:`~sharpkd.inference.tiled.run_model` would run it.  A window's core depends only on that
window's input, so the result is bit for bit what recomputing every window gives (tested), and
a still camera over a static scene costs a comparison per frame instead of the model.

Every :data:`PROBE`-th row is compared first: when :data:`ALL_CHANGED` of the windows changed
there (a moving camera), the frame runs whole through the wrapped sharpener, on the same grid,
without the exact comparison and the per-window bookkeeping.

The grid is ``tile``'s: a 1920x1080 frame at the default tile is one window (only a frame equal
to the previous one is reused); ``--tile 256`` gives about 40 windows, so a change touches few.
"""

from __future__ import annotations

import numpy as np


#: every PROBE-th row is compared first; when at least ALL_CHANGED of the windows changed there,
#: the frame runs whole (the exact comparison would only add its cost)
PROBE = 8
ALL_CHANGED = 0.9


class ChangedWindows:
    """Callable like the sharpener it wraps; :attr:`computed` and :attr:`total` count windows."""

    def __init__(self, sharpener) -> None:
        self.sharpener = sharpener
        self.device = getattr(sharpener, "device", "cpu")
        self._prev_in: np.ndarray | None = None
        self._prev_out: np.ndarray | None = None
        self._prev_model = None  # the module that made _prev_out: a window is reused only under the same one
        self.computed = 0
        self.total = 0

    def __getattr__(self, name: str):  # model, weights, runtime ...: the wrapped sharpener's
        return getattr(self.__dict__["sharpener"], name)

    def reset_counts(self) -> None:
        self.computed = self.total = 0

    def fraction(self) -> float | None:
        """Share of windows run through the model since :meth:`reset_counts` (``None``: none yet)."""
        return round(self.computed / self.total, 4) if self.total else None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        import torch

        from sharpkd.inference.tiled import run_model, window_cores, windows

        s = self.sharpener
        if s.strength == 0:
            return rgb.copy()
        model = s.model_for(rgb)  # of a pair of experts, the one this frame gets
        m = max(1, int(getattr(model, "multiple_of", getattr(s.model, "multiple_of", 1))))
        h, w = rgb.shape[:2]
        t = (s.tile // m) * m
        ys, th = windows(h, t, s.overlap, m)
        xs, tw = windows(w, t, s.overlap, m)
        ycore = dict(zip(ys, window_cores(ys, th, h)))
        xcore = dict(zip(xs, window_cores(xs, tw, w)))
        prev = self._prev_in
        changed = None
        if prev is not None and prev.shape == rgb.shape and prev.dtype == rgb.dtype and model is self._prev_model:
            ch = rgb.shape[2]
            # A look at every PROBE-th row first: a window with a changed pixel there has changed.
            # When nearly all have (a moving camera), every window runs as the wrapped sharpener
            # runs them, with no per-window bookkeeping: the same grid, so the same bytes.
            probe = np.not_equal(rgb[::PROBE].reshape(-(-h // PROBE), -1), prev[::PROBE].reshape(-(-h // PROBE), -1))
            seen = sum(bool(probe[-(-y0 // PROBE):-(-(y0 + th) // PROBE), x0 * ch:(x0 + tw) * ch].any())
                       for y0 in ys for x0 in xs)
            if seen >= ALL_CHANGED * len(ys) * len(xs):
                with torch.inference_mode():
                    out = run_model(model, rgb, tile=s.tile, overlap=s.overlap, device=s.device, strength=s.strength)
                self.total += len(ys) * len(xs)
                self.computed += len(ys) * len(xs)
                self._prev_in, self._prev_out, self._prev_model = rgb.copy(), out, model
                return out
            # one exact pass over the frame, channels side by side in each row (a reduction over
            # the last axis of length 3 would cost more than the comparison)
            changed = np.not_equal(rgb.reshape(h, -1), prev.reshape(h, -1))
        out = np.empty_like(rgb)
        with torch.inference_mode():
            for y0 in ys:
                for x0 in xs:
                    (a, b), (c, d) = ycore[y0], xcore[x0]
                    self.total += 1
                    if changed is not None and not changed[y0:y0 + th, x0 * ch:(x0 + tw) * ch].any():
                        out[a:b, c:d] = self._prev_out[a:b, c:d]
                        continue
                    y = run_model(model, rgb[y0:y0 + th, x0:x0 + tw], tile=s.tile, overlap=s.overlap,
                                  device=s.device, strength=s.strength)
                    out[a:b, c:d] = y[a - y0:b - y0, c - x0:d - x0]
                    self.computed += 1
        self._prev_in, self._prev_out, self._prev_model = rgb.copy(), out, model  # a copy: a caller may reuse its frame buffer
        return out


__all__ = ["ChangedWindows"]
