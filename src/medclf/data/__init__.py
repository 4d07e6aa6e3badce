"""Data: layouts (:mod:`medclf.data.layouts`), loading, decoding, the decode cache, and the in-memory ImageSet.

``medclf.data.augmentation`` and ``medclf.data.synthetic`` are imported where they are used, not here, so that
loading data needs neither.
"""

from __future__ import annotations

from medclf.data.dataset import ImageSet, Preprocessing
from medclf.data.decode import decode_image, resize_array
from medclf.data.layouts import LAYOUTS, LayoutInfo, SourceListing
from medclf.data.rows import Rows
from medclf.data.sources import list_image_files, load_dataset, preprocessing_from_config

__all__ = [
    "ImageSet",
    "LAYOUTS",
    "LayoutInfo",
    "Preprocessing",
    "Rows",
    "SourceListing",
    "decode_image",
    "list_image_files",
    "load_dataset",
    "preprocessing_from_config",
    "resize_array",
]
