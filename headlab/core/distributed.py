"""Data parallelism under `accelerate launch`: one model per process, items sharded, results gathered.

    accelerate launch --num_processes 8 -m headlab.cli detect --model M --probes P --device cuda --out runs/d

Each process loads its own copy of the model (on its own GPU: `process_device`), scores a contiguous block
of the items (`map_items`), and every process gets back the whole list in the input order, so the code after
the gather is the single-process code unchanged. Only the main process writes files (`is_main`).

Items are independent (every probe and example is decoded on its own), so a sharded run gives the numbers
of a single-process run. Without a launcher (no WORLD_SIZE > 1 in the environment) every function here is
a no-op and accelerate's process state is never created.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def launched() -> bool:
    """True inside `accelerate launch` / torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _state():
    import torch
    from accelerate import PartialState

    # A singleton: the process group is set up once, on first use. Without GPUs the processes talk over gloo
    # (accelerate picks a CPU backend only when asked for the CPU).
    state = PartialState(cpu=not torch.cuda.is_available())
    global _closing_registered
    if not _closing_registered:
        atexit.register(_close, state)
        _closing_registered = True
    return state


_closing_registered = False


def _close(state) -> None:
    """At exit, wait for every process and take the process group down: a process that leaves with its gloo
    threads still running can abort ("terminate called without an active exception") and fail the launch."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        state.wait_for_everyone()
        dist.destroy_process_group()


def is_main() -> bool:
    """The process that writes outputs and prints (always True without a launcher)."""
    return not launched() or _state().is_main_process


def process_device(device: str) -> str:
    """The device this process should load its model on: `cuda` becomes `cuda:<local rank>` when launched."""
    if launched() and device == "cuda":
        return f"cuda:{_state().local_process_index}"
    return device


def map_items(fn: Callable[[list[T]], list[R]], items: Sequence[T]) -> list[R]:
    """`fn(items)` computed in shards: each process runs `fn` on its contiguous block; every process gets the
    concatenation in process order, i.e. the results of all items in the input order.

    `fn` must return one result per item and treat items independently. A process whose block is empty
    (fewer items than processes) skips `fn` but still joins the gather, which every process must reach.
    """
    if not launched():
        return fn(list(items))
    from accelerate.utils import gather_object

    state = _state()
    with state.split_between_processes(list(items)) as block:
        local = fn(list(block)) if block else []
    if len(local) != len(block):
        raise RuntimeError(f"map_items: {len(local)} results for {len(block)} items")
    return gather_object(local)
