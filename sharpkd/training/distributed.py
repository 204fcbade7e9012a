"""Optional data parallelism under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N python -m stages.train ...`` sets ``WORLD_SIZE``/``RANK``;
:func:`distributed` then initialises the process group (NCCL on GPU, gloo on CPU) and
tears it down afterwards.  Without ``torchrun`` it does nothing.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
import torch.distributed as dist


@contextlib.contextmanager
def distributed() -> Iterator[tuple[int, int, str | None]]:
    """Yield ``(rank, world_size, device)``; device is ``cuda:<local rank>`` under a multi-GPU
    torchrun, ``cpu`` under a CPU torchrun, and ``None`` (let the caller choose) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield 0, 1, None
        return
    use_cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        yield dist.get_rank(), world, (f"cuda:{local}" if use_cuda else "cpu")
    finally:
        dist.destroy_process_group()
