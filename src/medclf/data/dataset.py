"""The in-memory form of a dataset after decoding: what every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ImageSet", "Preprocessing", "SPLITS"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Preprocessing:
    """How a source image becomes a cached uint8 array; part of every cache key and of model.json."""

    size_hw: tuple[int, int]  # (height, width) in pixels
    channels: int  # 1 (grayscale) or 3 (RGB)
    resize: str = "resize"  # "resize" (stretch) or "pad" (keep aspect ratio, pad with black)

    def key(self) -> str:
        return f"{self.size_hw[0]}x{self.size_hw[1]}-c{self.channels}-{self.resize}"

    def to_dict(self) -> dict:
        return {"size_hw": list(self.size_hw), "channels": self.channels, "resize": self.resize}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(size_hw=tuple(d["size_hw"]), channels=int(d["channels"]), resize=d.get("resize", "resize"))


@dataclass
class ImageSet:
    """Decoded images with their labels and provenance, index-aligned.

    Attributes:
        images: (N, C, H, W) uint8.
        labels: (N,) int64 class indices into ``class_names``.
        ids: (N,) str; a path relative to the data root, or ``<split>/<index>`` for array sources.
        splits: (N,) str; "train", "val" or "test" (sources with no splits put everything in "train").
        class_names: the class of each label index, in index order.
        groups: (N,) str patient ids, or None when the source has none.
        fingerprint: content hash of the pixels, labels, splits and preprocessing (changes iff the data does).
        duplicates: groups of ids whose source files (or arrays) are byte-identical, first id first.
        root: the folder ids are relative to, when ids are paths.
    """

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    splits: np.ndarray
    class_names: list[str]
    groups: np.ndarray | None = None
    fingerprint: str = ""
    duplicates: list[list[str]] = field(default_factory=list)
    root: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def split_indices(self, name: str) -> np.ndarray:
        """Indices of the images in split ``name``."""
        return np.flatnonzero(self.splits == name)

    def counts(self) -> dict[str, dict[str, int]]:
        """Image counts per split and class: ``{split: {class: n}}`` for splits that are present."""
        out: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            idx = self.split_indices(split)
            if len(idx):
                counts = np.bincount(self.labels[idx], minlength=len(self.class_names))
                out[split] = {c: int(n) for c, n in zip(self.class_names, counts)}
        return out
