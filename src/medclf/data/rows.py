"""Rows of a decoded image set, in RAM or memory-mapped from the decode cache, gathered a batch at a time.

A :class:`Rows` is an (N, C, H, W) uint8 array (a torch tensor, a numpy array or a read-only ``np.memmap``)
plus an optional ``index`` choosing a subset of its rows, so a fold's training split is a view and never a copy.
:meth:`Rows.take` gathers a batch in the order asked: it reads the distinct rows sorted, with one numpy fancy
index (sequential reads on a map), then puts them back in the asked order, so the batch is bit for bit
``tensor[positions]`` and a shuffle stays a true shuffle.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = ["Rows"]

Positions = torch.Tensor | np.ndarray | Sequence[int]


class Rows:
    """Rows ``index`` (all if None) of an (N, C, H, W) uint8 ``array``.

    Args:
        array: a uint8 tensor, ndarray or memmap of shape (N, C, H, W); it is not copied.
        index: positions into ``array`` (int, any order, repeats allowed); None means every row.
    """

    def __init__(self, array: np.ndarray | torch.Tensor, index: Positions | None = None) -> None:
        if array.ndim != 4:
            raise ValueError(f"Rows needs an (N, C, H, W) array; got shape {tuple(array.shape)}.")
        self.array = array
        self.index = None if index is None else _as_index(index)

    @classmethod
    def of(cls, x: Rows | np.ndarray | torch.Tensor) -> Rows:
        """``x`` itself when it is already Rows, else all the rows of the tensor or array ``x``."""
        return x if isinstance(x, Rows) else cls(x)

    def __len__(self) -> int:
        return len(self.array) if self.index is None else len(self.index)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(len, C, H, W)."""
        return (len(self), *(int(s) for s in self.array.shape[1:]))

    @property
    def is_mapped(self) -> bool:
        """Whether the rows are read from a memory-mapped file (page cache) rather than anonymous memory."""
        node = self.array
        while node is not None:  # a view of a map (np.asarray of a memmap) is mapped too
            if isinstance(node, (np.memmap, mmap.mmap)):
                return True
            node = getattr(node, "base", None)
        return False

    def rows(self, positions: Positions) -> np.ndarray:
        """Row numbers in :attr:`array` of ``positions`` (int64)."""
        pos = _as_index(positions)
        return pos if self.index is None else self.index[pos]

    def subset(self, positions: Positions) -> Rows:
        """The rows at ``positions`` of these rows, as Rows over the same array (no copy)."""
        return Rows(self.array, self.rows(positions))

    def take(self, positions: Positions) -> torch.Tensor:
        """A uint8 tensor (B, C, H, W) of the rows at ``positions``, in that order (a new, writable tensor)."""
        rows = self.rows(positions)
        if isinstance(self.array, torch.Tensor) and self.array.device.type != "cpu":
            return self.array[torch.from_numpy(rows).to(self.array.device)]
        if isinstance(self.array, torch.Tensor) or not self.is_mapped:
            # numpy's fancy index of whole rows beats torch's advanced indexing of a uint8 NCHW tensor on a CPU
            # (0.4 vs 3-7 ms for 32 images of 128x128 on a busy 2-core machine); it copies: a writable tensor
            array = self.array.numpy() if isinstance(self.array, torch.Tensor) else self.array
            return torch.from_numpy(np.asarray(array[rows]))
        # Each distinct row read once, in file order (sequential reads of the map); ``inverse`` restores the
        # asked order and the repeats, so the batch is the same as an unsorted gather's.
        unique, inverse = np.unique(rows, return_inverse=True)
        return torch.from_numpy(np.asarray(self.array[unique])[inverse.reshape(-1)])

    def chunks(self, size: int = 2048) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, batch)`` over every row in order, ``size`` rows at a time: a bounded-memory pass."""
        for start in range(0, len(self), size):
            yield start, self.take(np.arange(start, min(start + size, len(self))))

    def __repr__(self) -> str:
        kind = "memmap" if self.is_mapped else type(self.array).__name__
        return f"Rows({kind}, shape={self.shape})"


def _as_index(positions: Positions) -> np.ndarray:
    """``positions`` (tensor, array or sequence) as a 1-D int64 numpy array."""
    if isinstance(positions, torch.Tensor):
        positions = positions.detach().cpu().numpy()
    pos = np.asarray(positions)
    if pos.dtype == bool:
        raise TypeError("Rows positions are integers; a boolean mask is not accepted.")
    return pos.astype(np.int64, copy=False).reshape(-1)
