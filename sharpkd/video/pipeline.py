"""Source -> model -> sink in three threads: what ``sharpkd sharpen`` (decode, model, encode) and
``sharpkd stream`` (stdin, model, stdout) share.

The source (an iterable) runs in its own thread, the model in the calling thread, the sink in its
own thread, with a bounded queue on each side, so reading, the model and writing overlap while at
most ``depth`` items wait on each side.  One stop event ends every stage: an exception in the
source or the sink is kept (:attr:`Pipeline.source_error`, :attr:`Pipeline.sink_error`) and stops
the others; an exception in the model (or in ``at_end``) stops the others and is raised by
:meth:`Pipeline.run` once they have ended.  Time is kept per stage: CPU time of the source and
sink threads, and wall time of the model and of its waits on either side.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable

DEPTH = 4  # items in flight on each side of the model


class Stop(Exception):
    """Another stage stopped the pipeline (an error or an interrupt)."""


def put(q: queue.Queue, item, stop: threading.Event) -> None:
    """``q.put(item)``, giving up with :class:`Stop` once ``stop`` is set."""
    while True:
        if stop.is_set():
            raise Stop
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def get(q: queue.Queue, stop: threading.Event):
    """``q.get()``, giving up with :class:`Stop` once ``stop`` is set and the queue is empty."""
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                raise Stop from None


_END = object()


class Pipeline:
    """``source`` -> ``model_fn`` -> ``sink``, each item in order.

    * ``source``: an iterable, iterated in its own thread (a generator is closed there when the
      pipeline stops early);
    * ``model_fn(item)``: runs in the calling thread; its result goes to the sink;
    * ``sink(item)``: runs in its own thread; ``finish()`` runs there after the last item;
    * ``at_end()``: runs in the calling thread once the source is exhausted, before the sink
      is told so (it may raise to fail the run);
    * ``source_blocks``: the source may block where no stop can reach it (a read from a pipe):
      after a stop it is given a second to end, then left behind (its thread is a daemon).

    Attributes after :meth:`run`: ``source_error``, ``sink_error`` (the exception that ended the
    stage, else ``None``), ``source_cpu_s``, ``sink_cpu_s`` (CPU time of each thread),
    ``model_s``, ``wait_source_s``, ``wait_sink_s`` (wall time in the calling thread)."""

    def __init__(self, source: Iterable, model_fn: Callable, sink: Callable, *, finish: Callable | None = None,
                 at_end: Callable | None = None, depth: int = DEPTH, names: tuple[str, str] = ("source", "sink"),
                 source_blocks: bool = False) -> None:
        self.source, self.model_fn, self.sink, self.finish, self.at_end = source, model_fn, sink, finish, at_end
        self.source_blocks = source_blocks
        self.stop = threading.Event()
        self.q_in: queue.Queue = queue.Queue(depth)
        self.q_out: queue.Queue = queue.Queue(depth)
        self.source_error: BaseException | None = None
        self.sink_error: BaseException | None = None
        self.source_cpu_s = self.sink_cpu_s = 0.0
        self.model_s = self.wait_source_s = self.wait_sink_s = 0.0
        self._threads = (threading.Thread(target=self._read, name=names[0], daemon=True),
                         threading.Thread(target=self._write, name=names[1], daemon=True))

    # -- the two threads ------------------------------------------------------------------------
    def _read(self) -> None:
        t = time.thread_time()
        it = iter(self.source)
        try:
            for item in it:
                put(self.q_in, item, self.stop)
            put(self.q_in, _END, self.stop)
        except Stop:
            pass
        except BaseException as exc:  # noqa: BLE001 - kept for the caller, never lost
            self.source_error = exc
            self.stop.set()
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except BaseException as exc:  # noqa: BLE001
                    self.source_error = self.source_error or exc
            self.source_cpu_s = time.thread_time() - t

    def _write(self) -> None:
        t = time.thread_time()
        try:
            while True:
                item = get(self.q_out, self.stop)
                if item is _END:
                    if self.finish is not None:
                        self.finish()
                    return
                self.sink(item)
        except Stop:
            pass
        except BaseException as exc:  # noqa: BLE001 - kept for the caller, never lost
            self.sink_error = exc
            self.stop.set()
        finally:
            self.sink_cpu_s = time.thread_time() - t

    # -- the calling thread ---------------------------------------------------------------------
    def run(self) -> None:
        """Run every item through; returns when the sink has finished or a stage stopped the
        pipeline (see the errors), raises what the model or ``at_end`` raised."""
        for t in self._threads:
            t.start()
        try:
            try:
                while True:
                    t = time.perf_counter()
                    item = get(self.q_in, self.stop)
                    t1 = time.perf_counter()
                    self.wait_source_s += t1 - t
                    if item is _END:
                        break
                    out = self.model_fn(item)
                    t2 = time.perf_counter()
                    self.model_s += t2 - t1
                    put(self.q_out, out, self.stop)
                    self.wait_sink_s += time.perf_counter() - t2
                if self.at_end is not None:
                    self.at_end()
                put(self.q_out, _END, self.stop)
            except Stop:
                pass
            self._join(failed=False)
        except BaseException:
            self.stop.set()
            self._join(failed=True)
            raise

    def _join(self, failed: bool) -> None:
        source, sink = self._threads
        sink.join(timeout=10 if failed else None)
        if not self.source_blocks:
            source.join(timeout=10 if failed else None)
        elif not failed:
            source.join(timeout=1 if self.stop.is_set() else None)


__all__ = ["DEPTH", "Pipeline", "Stop", "get", "put"]
