"""The process around a run: which device it computes on, and signals that end it cleanly.

Used by the ``sharpkd`` command and by the pipeline's stage scripts alike.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

from sharpkd.errors import SharpkdError

#: Names the file a process started by :func:`sharpkd.training.distributed.launch` writes its
#: one-line error message to (:func:`sharpkd.stage.main` does), so the launcher prints one line.
ERROR_FILE_ENV = "SHARPKD_ERROR_FILE"


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SharpkdError("device 'cuda' requested but no CUDA GPU is visible; use device: auto or cpu")
    if name not in ("cpu", "cuda"):
        raise SharpkdError(f"device must be auto, cpu or cuda, got {name!r}")
    return name



_INTERRUPTED: list[int] = []



def interrupt_requested() -> bool:
    """True once SIGINT or SIGTERM arrived inside :func:`sigterm_as_interrupt`.  Loops check it
    after each item because a library may swallow the :class:`KeyboardInterrupt` (numpy, say,
    while it asks an object for its array interface)."""
    return bool(_INTERRUPTED)



@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`KeyboardInterrupt` like Ctrl-C (SIGINT) does, so
    that ``finally`` blocks and :func:`~sharpkd.files.atomic_path` remove temporary files when a
    job is cancelled (``kill``, a CI timeout, ``docker stop``); both are also recorded for
    :func:`interrupt_requested`.  An error that leaves the block after a signal arrived is
    re-raised as that :class:`KeyboardInterrupt` (a library may turn the interrupt into its own
    error: safetensors raises ``ValueError`` when SIGTERM lands during a model load), so the
    signal decides the outcome.  No-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _INTERRUPTED.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    _INTERRUPTED.clear()
    try:
        yield
    except Exception as exc:
        if _INTERRUPTED:
            raise KeyboardInterrupt(f"signal {_INTERRUPTED[0]}") from exc
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _INTERRUPTED.clear()


