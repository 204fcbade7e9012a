"""Temporal stability of a model on video: how much its output flickers between frames."""

from __future__ import annotations

import numpy as np

class TemporalStability:
    """Flicker measure for video: mean absolute frame-to-frame difference of the output
    divided by that of the input (``1.0`` = the output changes between frames exactly as much
    as the input does; above 1 = added flicker).  Values on the 0..255 scale."""

    def __init__(self) -> None:
        self.prev: tuple[np.ndarray, np.ndarray] | None = None
        self.d_in = self.d_out = 0.0
        self.n = 0

    @staticmethod
    def _diff(a: np.ndarray, b: np.ndarray) -> float:
        """Mean absolute difference on the 0..255 scale (uint16 frames divided by 257): one
        vectorised pass (OpenCV's L1 norm), no float copies of the frames."""
        import cv2

        d = cv2.norm(np.ascontiguousarray(a), np.ascontiguousarray(b), cv2.NORM_L1) / a.size
        return d / 257.0 if a.dtype == np.uint16 else d

    def add(self, frame_in: np.ndarray, frame_out: np.ndarray) -> None:
        if self.prev is not None:
            self.d_in += self._diff(frame_in, self.prev[0])
            self.d_out += self._diff(frame_out, self.prev[1])
            self.n += 1
        self.prev = (frame_in, frame_out)

    def result(self) -> dict:
        if self.n == 0:
            return {"frame_diff_input": None, "frame_diff_output": None, "flicker_ratio": None}
        di, do = self.d_in / self.n, self.d_out / self.n
        return {"frame_diff_input": round(di, 4), "frame_diff_output": round(do, 4),
                "flicker_ratio": round(do / di, 4) if di > 0 else None}


