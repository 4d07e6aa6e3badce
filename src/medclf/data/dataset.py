"""The in-memory form of a dataset after decoding: what every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SMALL_IMAGE_FACTOR", "SPLITS", "ImageSet", "Preprocessing", "small_image_mask"]

SPLITS = ("train", "val", "test")

# An image is "small" when preprocessing enlarges it more than this many times: it then holds less detail than
# the model's input suggests (a 28 px image at image_size 128 is 4.6x), which is worth a warning, not an error.
SMALL_IMAGE_FACTOR = 2.0


@dataclass(frozen=True)
class Preprocessing:
    """How a source image becomes a cached uint8 array; part of every cache key and of model.json.

    The intensity fields apply to images deeper than 8 bits (16-bit PNG/TIFF, float TIFF, DICOM, NIfTI), the
    volume fields to 3-D volumes; both change what an image becomes, so both are part of :meth:`key`.
    """

    size_hw: tuple[int, int]  # (height, width) in pixels
    channels: int  # 1 (grayscale) or 3 (RGB)
    resize: str = "resize"  # "resize" (stretch) or "pad" (keep aspect ratio, pad with black)
    normalization: str = "minmax"  # "minmax", "percentile" or "window"
    percentiles: tuple[float, float] = (0.5, 99.5)  # percent, for "percentile"
    window: tuple[float, float] | None = None  # (center, width), for "window"
    dicom_voi: bool = True  # DICOM: the file's own VOI LUT or window wins over minmax/percentile
    volume_axis: int = 2
    volume_slice: str | int = "middle"

    def key(self) -> str:
        base = f"{self.size_hw[0]}x{self.size_hw[1]}-c{self.channels}-{self.resize}"
        extra = {k: v for k, v in self.to_dict().items() if k not in ("size_hw", "channels", "resize")}
        # with default intensity and volume settings the key (and model.json) is that of older versions
        return base + "".join(f"-{k}={extra[k]}" for k in sorted(extra))

    def upscale_factors(self, sizes_hw: np.ndarray) -> np.ndarray:
        """How many times this preprocessing enlarges each image: (N, 2) original (height, width) -> (N,).

        "resize" stretches each side on its own, so the larger of the two side ratios; "pad" scales both sides
        by the smaller ratio. Below 1 the image is shrunk.
        """
        sizes = np.maximum(np.asarray(sizes_hw, dtype=np.float64).reshape(-1, 2), 1.0)
        ratios = np.asarray(self.size_hw, dtype=np.float64) / sizes
        return ratios.min(axis=1) if self.resize == "pad" else ratios.max(axis=1)

    def to_dict(self) -> dict:
        """The fields as JSON; intensity and volume fields only where they differ from the defaults."""
        out = {"size_hw": list(self.size_hw), "channels": self.channels, "resize": self.resize}
        extra = {
            "normalization": self.normalization,
            "percentiles": list(self.percentiles),
            "window": None if self.window is None else list(self.window),
            "dicom_voi": self.dicom_voi,
            "volume_axis": self.volume_axis,
            "volume_slice": self.volume_slice,
        }
        defaults = {"normalization": "minmax", "percentiles": [0.5, 99.5], "window": None, "dicom_voi": True,
                    "volume_axis": 2, "volume_slice": "middle"}
        return out | {k: v for k, v in extra.items() if v != defaults[k]}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        window = d.get("window")
        return cls(
            size_hw=tuple(d["size_hw"]),
            channels=int(d["channels"]),
            resize=d.get("resize", "resize"),
            normalization=d.get("normalization", "minmax"),
            percentiles=tuple(d.get("percentiles", (0.5, 99.5))),
            window=None if window is None else tuple(window),
            dicom_voi=bool(d.get("dicom_voi", True)),
            volume_axis=int(d.get("volume_axis", 2)),
            volume_slice=d.get("volume_slice", "middle"),
        )


@dataclass
class ImageSet:
    """Decoded images with their labels and provenance, index-aligned.

    Attributes:
        images: (N, C, H, W) uint8; a read-only ``np.memmap`` of the decode cache under ``data.memory: mmap``.
        labels: (N,) int64 class indices into ``class_names``; for multi-label data (N, L) int64 0/1, one
            column per label of ``class_names``.
        ids: (N,) str; a path relative to the data root, or ``<split>/<index>`` for array sources.
        splits: (N,) str; "train", "val" or "test" (sources with no splits put everything in "train").
        class_names: the class of each label index, in index order.
        groups: (N,) str patient ids, or None when the source has none.
        studies: (N,) str study ids, or None when the source has none.
        fold_ids: (N,) int, for predefined fold folders: the fold each entry belongs to (``splits`` is then the
            split inside that fold, and an image present in several folds is one entry per fold); else None.
        holdout_folds: (N,) int, for a manifest's fold column: the fold whose held-out part holds the image
            (-1: none); else None.
        skipped: (path, reason) of every file left out because it could not be read (``on_bad_image: skip``).
        fingerprint: content hash of the pixels, labels, splits and preprocessing (changes iff the data does).
        duplicates: groups of ids whose source files (or arrays) are byte-identical, first id first; for
            predefined fold folders only copies inside one fold (an image in every fold is no copy), each
            group listed once (see :func:`medclf.data.sources.find_duplicates`).
        root: the folder ids are relative to, when ids are paths.
        original_sizes: (N, 2) int64, each image's own (height, width) in pixels before resizing, or None.
        small_images: ids of the images preprocessing enlarges more than :data:`SMALL_IMAGE_FACTOR` times,
            in dataset order.
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
    studies: np.ndarray | None = None
    fold_ids: np.ndarray | None = None
    holdout_folds: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    original_sizes: np.ndarray | None = None
    small_images: list[str] = field(default_factory=list)

    @property
    def multilabel(self) -> bool:
        """Whether ``labels`` is (N, L) multi-hot rather than (N,) class indices."""
        return self.labels.ndim == 2

    def __len__(self) -> int:
        return len(self.labels)

    def small_images_summary(self, limit: int = 10) -> dict:
        """data.json's ``small_images``: how many images preprocessing enlarges more than ``factor`` times, and
        the ids of the first ``limit`` of them."""
        return {"count": len(self.small_images), "factor": SMALL_IMAGE_FACTOR, "first": self.small_images[:limit]}

    def split_indices(self, name: str) -> np.ndarray:
        """Indices of the images in split ``name``."""
        return np.flatnonzero(self.splits == name)

    def counts(self) -> dict[str, dict[str, int]]:
        """Image counts per split and class: ``{split: {class: n}}`` for splits that are present."""
        out: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            idx = self.split_indices(split)
            if len(idx) and self.multilabel:
                out[split] = {c: int(n) for c, n in zip(self.class_names, self.labels[idx].sum(axis=0))}
            elif len(idx):
                counts = np.bincount(self.labels[idx], minlength=len(self.class_names))
                out[split] = {c: int(n) for c, n in zip(self.class_names, counts)}
        return out


def small_image_mask(sizes_hw: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """(N,) bool: which images ``prep`` enlarges more than :data:`SMALL_IMAGE_FACTOR` times (see
    :meth:`Preprocessing.upscale_factors`); an unknown size (0, 0) is never small."""
    sizes = np.asarray(sizes_hw, dtype=np.int64).reshape(-1, 2)
    return (prep.upscale_factors(sizes) > SMALL_IMAGE_FACTOR) & (sizes > 0).all(axis=1)
