"""The threaded source -> model -> sink pipeline (sharpkd/video/pipeline.py) that ``sharpen``
and ``stream`` run on: order kept, errors from any stage stop the others, time per stage."""

from __future__ import annotations

import threading

import pytest

from sharpkd.video.pipeline import Pipeline


def test_items_in_order_and_finish_once():
    got, finished = [], []
    pipe = Pipeline(range(50), lambda x: x * 2, got.append, finish=lambda: finished.append(len(got)), depth=2)
    pipe.run()
    assert got == [2 * i for i in range(50)] and finished == [50]
    assert pipe.source_error is None and pipe.sink_error is None
    assert min(pipe.source_cpu_s, pipe.sink_cpu_s, pipe.model_s, pipe.wait_source_s, pipe.wait_sink_s) >= 0


def test_source_error_stops_and_is_kept():
    closed = []

    def source():
        try:
            yield 1
            raise OSError(5, "read failed")
        finally:
            closed.append(threading.current_thread().name)

    got = []
    pipe = Pipeline(source(), lambda x: x, got.append, names=("src", "snk"))
    pipe.run()
    assert isinstance(pipe.source_error, OSError) and pipe.stop.is_set() and closed == ["src"]


def test_sink_error_stops_an_endless_source():
    def endless():
        while True:
            yield 0

    def sink(item):
        raise BrokenPipeError

    pipe = Pipeline(endless(), lambda x: x, sink)
    pipe.run()  # returns: the stop reaches the source and the model
    assert isinstance(pipe.sink_error, BrokenPipeError) and pipe.source_error is None


@pytest.mark.parametrize("where", ["model", "at_end"])
def test_model_error_raised_after_the_threads_end(where):
    def model(x):
        if where == "model" and x == 3:
            raise ValueError("bad frame")
        return x

    def at_end():
        raise ValueError("bad end")

    finished = []
    pipe = Pipeline(range(10), model, lambda x: None, finish=lambda: finished.append(1),
                    at_end=at_end if where == "at_end" else None)
    with pytest.raises(ValueError, match="bad"):
        pipe.run()
    assert finished == [] and not any(t.is_alive() for t in pipe._threads)
