"""Data-parallel training of one fold across processes: torch's DistributedDataParallel under ``torchrun``.

``torchrun --nproc-per-node N -m medclf run CONFIG`` starts N copies of ``medclf run``; torchrun gives each its
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. Every process builds the same batch plan (same seed), takes every
``world``-th image of each *global* batch (:func:`shard`), and DDP averages the gradients, so ``batch_size``
means what it means in one process. Validation predictions are gathered (:func:`gather_probs`) so every rank
computes the same metrics and takes the same best-epoch and early-stopping decisions without another message.
Only rank 0 writes (:func:`is_writer`); ``MEDCLF_DDP_GUARD=1`` makes any other rank's write raise
(:mod:`medclf.atomic`).

Outside torchrun every function here is a no-op on one process: ``world()`` is ``(0, 1)``.
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["TIMEOUT", "all_mean", "barrier", "broadcast_object", "finish", "gather_probs", "init_from_env",
           "interleave", "is_distributed", "is_writer", "own_generator", "shard", "sync_buffers", "world", "wrap"]

T = TypeVar("T")

# How long a rank waits for the others at one collective call. Rank 0 alone loads the data (and fills the
# decode cache) and evaluates each fold while the others wait, which can take far longer than torch's default
# (30 min for gloo, 10 for nccl) on a large data set.
TIMEOUT = timedelta(hours=2)


def world() -> tuple[int, int]:
    """``(rank, world_size)``: of the initialised process group, else torchrun's environment, else ``(0, 1)``."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    """Whether a process group is initialised (a :class:`~medclf.training.Trainer` then trains with DDP)."""
    return dist.is_available() and dist.is_initialized()


def is_writer() -> bool:
    """Whether this process writes files: rank 0, or any process not started by torchrun."""
    return world()[0] == 0


def init_from_env(*, cuda: bool | None = None) -> tuple[int, int]:
    """Join the process group torchrun describes (``WORLD_SIZE > 1``) for this process's life; idempotent.

    NCCL when training on CUDA (each process takes GPU ``LOCAL_RANK``), gloo on CPU. ``cuda``: whether the fit
    runs on CUDA (default: whether CUDA is available). Returns ``(rank, world_size)``.
    """
    if is_distributed():
        return world()
    rank, size = world()
    if size <= 1:
        return rank, size
    use_cuda = torch.cuda.is_available() if cuda is None else cuda
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # "cuda" then means this rank's GPU
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    # Kept until the process exits: a second group in the same torchrun job would read the first one's
    # addresses from torchrun's store (same keys) and fail to connect.
    atexit.register(finish)
    return world()


def finish() -> None:
    """Leave the process group (at exit); nothing when none is initialised."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank arrives here; nothing when not distributed."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` (any picklable value) on every rank; the other ranks' argument is ignored."""
    if not is_distributed():
        return obj
    box = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def shard(positions: T) -> T:
    """This rank's part of one global batch (or of a validation set): every ``world_size``-th position from ``rank``.

    The ranks' parts are disjoint, cover ``positions`` and differ in size by at most one. Without an initialised
    process group (even under torchrun's environment) this process holds every position.
    """
    if not is_distributed():
        return positions
    rank, size = dist.get_rank(), dist.get_world_size()
    return positions if size == 1 else positions[rank::size]  # type: ignore[index]


def gather_probs(probs: np.ndarray) -> np.ndarray:
    """The whole set's probabilities on every rank, from each rank's :func:`shard` of the positions ``0..N-1``.

    Rank ``r`` predicted positions ``r, r + world, ...``; the parts are interleaved back into that order.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return probs
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, np.asarray(probs))  # small (N, K) arrays: pickling costs nothing here
    return interleave(parts)


def interleave(parts: list[np.ndarray]) -> np.ndarray:
    """Rows ``r, r + W, r + 2W, ...`` from ``parts[r]`` (W = ``len(parts)``): the inverse of :func:`shard`."""
    size = len(parts)
    width = max(p.shape[1] for p in parts)  # an empty shard predicts a (0, 0) array
    out = np.empty((sum(len(p) for p in parts), width), dtype=np.result_type(*[p.dtype for p in parts]))
    for r, part in enumerate(parts):
        if len(part):
            out[r::size] = part
    return out


def own_generator(shared: torch.Generator, *, seed: int) -> torch.Generator:
    """The generator of the draws a rank makes for its own shard (augmentation): ``shared`` in one process.

    Draws per image consume the generator by the shard's size, which differs between ranks; drawing them from
    the generator of the batch plan would let the ranks' next plans (their shuffles) drift apart.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return shared
    rank_seed = np.random.SeedSequence([seed, dist.get_rank()]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(rank_seed))


def all_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar tensor over the ranks (each rank's training loss -> the logged one)."""
    if not is_distributed():
        return value
    total = value.detach().clone().float()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def wrap(model: nn.Module) -> nn.Module:
    """``model`` in DistributedDataParallel, registering the parameters that require gradients *now*.

    Wrap after each stage's freezing: DDP fixes its gradient buckets at construction, and a parameter that
    stops (or starts) training later would make its reduction wait forever.
    """
    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids)


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, so validation sees the model rank 0 saves.

    DDP broadcasts the buffers before each training forward, but each rank then updates them from its own
    shard, so after an epoch they differ slightly.
    """
    if not is_distributed():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
