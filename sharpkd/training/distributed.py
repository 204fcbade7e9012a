"""Several processes under ``torchrun``: data-parallel training and sharded inference.

``torchrun --nproc_per_node N python -m stages.train ...`` (or ``stages.teacher``) sets
``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` and the rendezvous (``MASTER_ADDR``/``MASTER_PORT``, the
``env://`` method); :func:`distributed` then initialises the process group (NCCL on GPU, gloo on
CPU) and tears it down afterwards.  Without ``torchrun`` it does nothing.

* :func:`gather_parts` puts back together a list whose items were computed round-robin by rank
  (rank ``r`` of ``W`` takes items ``r, r + W, r + 2W ...``), so the result is the list one
  process computes, whatever ``W``.
* :func:`broadcast_module` makes every rank hold rank 0's weights.
* :func:`launch` runs a command as N processes on this machine with the environment torchrun
  gives them (a stage that re-launches itself, see ``stages/teacher.py``), and reports a failure
  as one line: each process writes its error message to the file named by ``SHARPKD_ERROR_FILE``
  (:func:`sharpkd.stage.main` does), and the launcher raises the lowest rank's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist

from sharpkd.errors import SharpkdError
from sharpkd.process import ERROR_FILE_ENV

__all__ = ["broadcast_module", "distributed", "gather_parts", "launch", "processes", "world"]


def processes(value, key: str) -> int:
    """A params value that counts processes (``teacher.nproc``): an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SharpkdError(f"{key} must be an integer >= 1 (processes), got {value!r}")
    return value

@contextlib.contextmanager
def distributed(device: str | None = None) -> Iterator[tuple[int, int, str | None]]:
    """Yield ``(rank, world_size, device)``; device is ``cuda:<local rank>`` under a multi-GPU
    torchrun, ``cpu`` under a CPU torchrun (or when ``device`` is ``"cpu"``: gloo even where a GPU
    is visible), and ``None`` (let the caller choose) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield 0, 1, None
        return
    use_cuda = torch.cuda.is_available() and device != "cpu"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise SharpkdError(f"local rank {local} has no GPU: {torch.cuda.device_count()} visible on this machine")
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        yield dist.get_rank(), world, (f"cuda:{local}" if use_cuda else "cpu")
    finally:
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_parts(part: list, n: int, *, to_all: bool = False) -> list | None:
    """The ``n`` items computed round-robin across ranks (this rank's ``part`` is items
    ``rank, rank + W, ...``), in their order: on rank 0 (on every rank with ``to_all``); other
    ranks get None.  Items travel pickled (:func:`torch.distributed.gather_object`), so numpy
    arrays arrive with their bytes unchanged.  Without a process group it returns ``part``."""
    rank, size = world()
    if size == 1:
        return list(part)
    if to_all:
        parts: list[Any] | None = [None] * size
        dist.all_gather_object(parts, list(part))
    else:
        parts = [None] * size if rank == 0 else None
        dist.gather_object(list(part), parts, dst=0)
    if parts is None:
        return None
    out: list[Any] = [None] * n
    for r, p in enumerate(parts):
        if len(p) != len(range(r, n, size)):
            raise SharpkdError(f"rank {r} computed {len(p)} items, expected {len(range(r, n, size))} of {n}")
        out[r::size] = p
    return out


def broadcast_module(model: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers into ``model`` on every rank (no-op without a group)."""
    if world()[1] == 1:
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, argv: list[str], *, grace_s: float = 10.0) -> None:
    """Run ``python argv`` as ``nproc`` processes on this machine, as ``torchrun --standalone
    --nproc_per_node nproc`` would (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``,
    ``MASTER_ADDR``/``MASTER_PORT`` on a free loopback port), and wait for all of them.

    Each process gets ``OMP_NUM_THREADS`` as set here, else this process's torch threads divided
    among them.  When one fails, the others get ``grace_s`` seconds to end (a failure that every
    rank meets, a bad parameter, ends them all), then SIGTERM, then SIGKILL; the lowest rank's
    error message (``SHARPKD_ERROR_FILE``) is raised as a :class:`SharpkdError`.  Ctrl-C or
    SIGTERM here ends every process and re-raises."""
    if nproc < 1:
        raise SharpkdError(f"need at least one process, got {nproc}")
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, torch.get_num_threads() // nproc))
    port = str(_free_port())
    with tempfile.TemporaryDirectory(prefix="sharpkd-launch-") as tmp:
        errors = [Path(tmp) / f"rank{r}.err" for r in range(nproc)]
        procs = []
        try:
            for r in range(nproc):
                env = os.environ | {"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(nproc),
                                    "LOCAL_WORLD_SIZE": str(nproc), "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                                    "MASTER_PORT": port, "OMP_NUM_THREADS": threads, ERROR_FILE_ENV: str(errors[r])}
                procs.append(subprocess.Popen([sys.executable, *argv], env=env))
            failed_at = None
            while any(p.poll() is None for p in procs):
                if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
                    failed_at = time.monotonic()
                if failed_at is not None and time.monotonic() - failed_at > grace_s:
                    _stop(procs)
                    break
                time.sleep(0.1)
        except BaseException:
            _stop(procs)
            raise
        codes = [p.returncode for p in procs]
        if all(c == 0 for c in codes):
            return
        for r, path in enumerate(errors):
            if path.exists() and path.read_text().strip():
                raise SharpkdError(path.read_text().strip())
        r, code = next((r, c) for r, c in enumerate(codes) if c != 0)
        raise SharpkdError(f"process {r} of {nproc} exited with status {code} (its output above says why)")


def _stop(procs: list[subprocess.Popen], wait_s: float = 5.0) -> None:
    """SIGTERM every running process, then SIGKILL what is still running after ``wait_s``."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + wait_s
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
