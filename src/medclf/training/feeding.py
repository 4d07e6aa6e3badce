"""Training batches delivered on the device the model trains on.

:func:`make_feed` chooses, once per fit, how a batch of uint8 images reaches ``runtime.device``:

* ``host`` (CPU training): :meth:`Rows.take <medclf.data.rows.Rows.take>`, nothing more;
* ``resident`` (CUDA, the set fits): the uint8 rows are copied to the GPU once, in chunks of
  :data:`CHUNK_BYTES` (a memory-mapped set never has a whole-set copy in RAM), and every batch is one
  ``index_select`` on the device: no host work and no host-to-device copy per step. "Fits" means the set takes at
  most :data:`RESIDENT_SHARE` of the GPU memory free when the fit starts (after the model is on the device), so the
  rest is left for activations, gradients and optimizer state;
* ``pinned`` (CUDA, the set does not fit): each batch is gathered on the host straight into a page-locked buffer
  (sorted rows, as Rows reads them), copied with ``non_blocking=True``, then put back in the asked order on the
  device. Two buffers are used in turn, and a buffer is refilled only after the CUDA event recorded behind its last
  copy has completed: the host gathers batch k+1 while the GPU computes batch k, and never overwrites memory a copy
  is still reading.

Every kind returns the batch :meth:`Rows.take` returns, bit for bit, on ``runtime.device``.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
import torch

from medclf.data.rows import Positions, Rows
from medclf.training.device import Runtime

__all__ = ["CHUNK_BYTES", "RESIDENT_SHARE", "Feed", "FeedKind", "HostFeed", "PinnedFeed", "ResidentFeed",
           "choose_feed", "make_feed"]

FeedKind = Literal["host", "resident", "pinned"]

# Share of the GPU's free memory (at the start of a fit, model already on it) the uint8 set may take to live there.
# Half leaves room for activations, gradients and optimizer state; a larger set uses the pinned buffer instead.
RESIDENT_SHARE = 0.5
CHUNK_BYTES = 64 * 2**20  # the resident copy moves the set in chunks of about this size (bounded host memory)


class Feed(Protocol):
    """Gives the uint8 batch (B, C, H, W) of the rows at ``positions``, in that order, on the training device."""

    kind: FeedKind

    def take(self, positions: Positions) -> torch.Tensor: ...


def choose_feed(nbytes: int, device: torch.device, *, free_bytes: int | None = None,
                share: float = RESIDENT_SHARE) -> FeedKind:
    """``host`` off CUDA; on CUDA ``resident`` when ``nbytes`` <= ``share`` of the free memory, else ``pinned``.

    ``free_bytes`` defaults to ``torch.cuda.mem_get_info(device)``'s free figure.
    """
    if device.type != "cuda":
        return "host"
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    return "resident" if nbytes <= share * free_bytes else "pinned"


def make_feed(rows: Rows, runtime: Runtime, *, kind: FeedKind | None = None) -> Feed:
    """The feed of ``rows`` onto ``runtime.device``: ``kind`` as :func:`choose_feed` picks it unless given.

    Forcing ``kind`` (``resident`` or ``pinned``) on the CPU runs the same code with a CPU "device"; the tests use it.
    """
    rows = Rows.of(rows)
    n_bytes = int(np.prod(rows.shape, dtype=np.int64))
    kind = kind or choose_feed(n_bytes, runtime.device)
    if kind == "host":
        return HostFeed(rows)
    if kind == "resident":
        return ResidentFeed(rows, runtime.device)
    return PinnedFeed(rows, runtime.device)


class HostFeed:
    """The batch as :meth:`Rows.take` gathers it, in host memory (CPU training)."""

    kind: FeedKind = "host"

    def __init__(self, rows: Rows) -> None:
        self.rows = rows

    def take(self, positions: Positions) -> torch.Tensor:
        return self.rows.take(positions)


class ResidentFeed:
    """The whole uint8 set on the device, copied once; a batch is one ``index_select`` there."""

    kind: FeedKind = "resident"

    def __init__(self, rows: Rows, device: torch.device) -> None:
        self.device = device
        self.images = torch.empty(rows.shape, dtype=torch.uint8, device=device)
        row_bytes = max(1, int(np.prod(rows.shape[1:], dtype=np.int64)))
        for start, chunk in rows.chunks(max(1, CHUNK_BYTES // row_bytes)):
            self.images[start : start + len(chunk)].copy_(chunk)  # from pageable memory: synchronous, once per fit

    def take(self, positions: Positions) -> torch.Tensor:
        return self.images.index_select(0, _device_index(positions, self.device))


class PinnedFeed:
    """Batches gathered into two reused page-locked host buffers, in turn, and copied asynchronously.

    Args:
        rows: the training rows (a tensor in RAM, an array or a memory map).
        device: where batches go.
        pin: page-lock the buffers (default: when CUDA is available; page-locking needs the CUDA driver).
    """

    kind: FeedKind = "pinned"

    def __init__(self, rows: Rows, device: torch.device, *, pin: bool | None = None) -> None:
        self.rows, self.device = rows, device
        self.pin = torch.cuda.is_available() if pin is None else pin
        self.buffers: list[torch.Tensor | None] = [None, None]
        self.copied: list[torch.cuda.Event | None] = [None, None]  # recorded behind each buffer's last copy
        self.turn = 0

    def take(self, positions: Positions) -> torch.Tensor:
        wanted = self.rows.rows(positions)
        # each distinct row read once, in file order (sequential reads on a map); ``inverse`` restores the order
        unique, inverse = np.unique(wanted, return_inverse=True)
        host = self._free_buffer(len(unique))
        _gather_into(self.rows.array, unique, host)
        out = torch.empty(host.shape, dtype=torch.uint8, device=self.device)
        out.copy_(host, non_blocking=True)  # same stream as the step that uses it: ordered without a wait
        self.copied[self.turn] = _record(self.device)
        self.turn ^= 1
        inverse = inverse.reshape(-1)
        if len(unique) == len(wanted) and np.array_equal(unique, wanted):
            return out  # already in the asked order (sorted, no repeats)
        return out.index_select(0, _device_index(inverse, self.device))

    def _free_buffer(self, n_rows: int) -> torch.Tensor:
        """The first ``n_rows`` of this turn's buffer, once the copy last made from it has completed."""
        event = self.copied[self.turn]
        if event is not None:
            event.synchronize()  # the GPU has finished reading this buffer: it may be overwritten
        buffer = self.buffers[self.turn]
        if buffer is None or len(buffer) < n_rows:
            shape = (n_rows, *self.rows.shape[1:])
            buffer = self.buffers[self.turn] = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin)
        return buffer[:n_rows]


def _gather_into(array: np.ndarray | torch.Tensor, rows: np.ndarray, out: torch.Tensor) -> None:
    """``array[rows]`` written into ``out`` without an intermediate copy (``rows`` sorted, in range)."""
    if isinstance(array, torch.Tensor):
        torch.index_select(array, 0, torch.from_numpy(rows).to(array.device), out=out)
        return
    if len(rows) and (rows[0] < 0 or rows[-1] >= len(array)):
        raise IndexError(f"row {rows[0] if rows[0] < 0 else rows[-1]} is out of range for {len(array)} rows")
    # mode="clip" (bounds checked above) lets numpy write into ``out`` directly; "raise" would buffer the copy
    np.take(array, rows, axis=0, out=out.numpy(), mode="clip")


def _device_index(positions: Positions, device: torch.device) -> torch.Tensor:
    if isinstance(positions, torch.Tensor):
        return positions.to(device=device, dtype=torch.int64, non_blocking=True)
    return torch.from_numpy(np.asarray(positions, dtype=np.int64).reshape(-1)).to(device)


def _record(device: torch.device) -> torch.cuda.Event | None:
    """An event completed once the work queued so far on ``device``'s current stream is done (None off CUDA)."""
    if device.type != "cuda":
        return None  # a CPU copy_ has finished when it returns
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event
