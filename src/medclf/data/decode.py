"""Decoding one image file (or a stack of arrays) into the uint8 (C, H, W) form every later stage consumes.

High-bit-depth images (16-bit PNG/TIFF, 32-bit integer and float TIFF), DICOM and NIfTI are mapped to 0..255 by
the preprocessing's intensity normalisation (min-max per image by default, or percentile clipping, or a fixed
window; see :mod:`medclf.data.formats`), which is part of :meth:`Preprocessing.key` and so of the cache key.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from medclf.data.dataset import Preprocessing
from medclf.data.formats import (
    DICOM_EXTENSIONS,
    NIFTI_EXTENSIONS,
    is_dicom,
    is_nifti,
    normalize_intensity,
    read_dicom,
    read_nifti,
)
from medclf.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "decode_image", "decode_image_with_size", "is_image_file", "resize_array"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", *DICOM_EXTENSIONS, *NIFTI_EXTENSIONS)
# The only decoders PIL may pick, whatever a file's name says: PIL chooses by content, and some of its other
# plugins hand the file to an external program (EPS runs Ghostscript), so a PostScript file named .png must fail.
PIL_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "TIFF", "GIF", "WEBP")  # JPEG covers multi-picture (MPO) files

# The exceptions PIL's decoders raise on broken input (a truncated stream is an OSError, a bad header a
# SyntaxError or ValueError, a broken deflate stream a zlib.error).
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` has one of the supported image extensions (case-insensitive), or is an extension-less
    DICOM file (this reads 4 bytes of a file without extension, so pass the real path, not a bare name)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS or is_nifti(path) or is_dicom(path)


def decode_image(path: str | Path, prep: Preprocessing) -> np.ndarray:
    """Decode one image file to the array the model sees.

    Args:
        path: a JPEG, PNG, BMP or TIFF file (8 or 16 bit; grayscale, RGB, RGBA or palette), a DICOM file
            (``.dcm``) or a NIfTI volume (``.nii``, ``.nii.gz``; one slice is taken).
        prep: the target size, channel count and resize mode.

    Returns:
        (C, H, W) uint8 array with ``C = prep.channels`` and ``(H, W) = prep.size_hw`` (pixels).

    Raises:
        DataError: the file is empty, truncated, corrupt or not an image PIL can read.
    """
    return decode_image_with_size(path, prep)[0]


def decode_image_with_size(path: str | Path, prep: Preprocessing) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_image`, plus the image's own (height, width) in pixels before it was resized."""
    path = Path(path)
    if is_dicom(path) or is_nifti(path):
        _check_not_empty(path)
        arr = read_dicom(path, prep) if is_dicom(path) else read_nifti(path, prep)
        img = Image.fromarray(np.ascontiguousarray(arr))
        original_hw = (int(arr.shape[0]), int(arr.shape[1]))
    else:
        img, original_hw = _open(path, prep)
    img = _to_channels(img, prep)
    img = fit_to_size(img, prep)
    arr = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)), original_hw


def _check_not_empty(path: Path) -> None:
    try:
        n_bytes = path.stat().st_size
    except FileNotFoundError:
        raise DataError("the image file does not exist", path=path) from None
    if n_bytes == 0:
        raise DataError("the image file is empty (0 bytes); copy it again or remove it", path=path)


def _open(path: Path, prep: Preprocessing) -> tuple[Image.Image, tuple[int, int]]:
    """Open and fully load ``path``, with its upright (height, width) as stored; every way it can fail becomes
    one DataError naming the file."""
    _check_not_empty(path)
    try:
        with Image.open(path, formats=PIL_FORMATS) as img:
            width, height = img.size  # before draft() shrinks a JPEG
            # JPEG can decode at 1/2, 1/4 or 1/8 scale for almost free; ask for no less than the largest
            # target side so the final resize still antialiases from at least that resolution.
            side = max(prep.size_hw)
            img.draft("L" if prep.channels == 1 else None, (side, side))
            img.load()
            upright = ImageOps.exif_transpose(img)
            if upright.size != img.size:  # an EXIF rotation by 90 degrees swaps the sides
                width, height = height, width
            return upright, (height, width)
    except PermissionError:
        raise DataError("the image file cannot be read (permission denied); check its permissions", path=path) from None
    except UnidentifiedImageError:
        raise DataError(
            f"not an image PIL can read (corrupt, or not really {path.suffix or 'an image'}); "
            f"replace or remove it. Supported formats: {' '.join(IMAGE_EXTENSIONS)}",
            path=path,
        ) from None
    except _DECODE_ERRORS as error:
        raise DataError(
            f"the image cannot be decoded ({type(error).__name__}: {error}); the file is probably truncated "
            "or corrupt: copy it again or remove it",
            path=path,
        ) from None


def _to_channels(img: Image.Image, prep: Preprocessing) -> Image.Image:
    """Convert any PIL mode to ``L`` (channels=1, luminance) or ``RGB`` (channels=3)."""
    channels = prep.channels
    if img.mode == "F" or img.mode.startswith("I"):
        img = Image.fromarray(normalize_intensity(np.asarray(img), prep), mode="L")
    elif img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        img = _flatten_on_black(img)
    elif img.mode not in ("L", "RGB"):
        img = img.convert("L" if img.mode == "1" else "RGB")  # palette, CMYK, YCbCr, ...
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def _flatten_on_black(img: Image.Image) -> Image.Image:
    """Composite a transparent image on black, as it would look displayed on the black background of a viewer."""
    rgba = img.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert("RGB")


def fit_to_size(img: Image.Image, prep: Preprocessing) -> Image.Image:
    """Resize an ``L`` or ``RGB`` image to ``prep.size_hw``: stretched, or aspect-preserving and zero-padded."""
    height, width = prep.size_hw
    if img.size == (width, height):
        return img
    if prep.resize == "resize":
        return img.resize((width, height), Image.Resampling.BILINEAR)
    if prep.resize != "pad":
        raise ValueError(f"Preprocessing.resize must be 'resize' or 'pad', got {prep.resize!r}")
    scale = min(width / img.width, height / img.height)
    inner = (max(1, min(width, round(img.width * scale))), max(1, min(height, round(img.height * scale))))
    canvas = Image.new(img.mode, (width, height), 0)
    canvas.paste(img.resize(inner, Image.Resampling.BILINEAR), ((width - inner[0]) // 2, (height - inner[1]) // 2))
    return canvas


def resize_array(arr: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Bring a stack of images from an array source to the preprocessing's size and channel count.

    Args:
        arr: (N, H, W) or (N, H, W, C) with C in {1, 3, 4} (a fourth channel is alpha and is dropped). uint8;
            other dtypes are rescaled per image from min-max to 0..255, as 16-bit files are.
        prep: the target size, channel count and resize mode.

    Returns:
        A new (N, C, H, W) uint8 array (a plain copy when the size and channels already match).

    Raises:
        DataError: the array does not have one of the shapes above.
    """
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"image arrays must be (N, H, W) or (N, H, W, C) with C = 1, 3 or 4, got shape {arr.shape}"
        )
    arr = _array_to_uint8(arr[..., :3])
    if prep.channels == 1 and arr.shape[-1] == 3:
        arr = _luminance(arr)
    out = np.empty((len(arr), *prep.size_hw, arr.shape[-1]), dtype=np.uint8)
    if arr.shape[1:3] == tuple(prep.size_hw):
        out[:] = arr
    else:
        for i, image in enumerate(arr):
            pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
            out[i] = np.asarray(fit_to_size(pil, prep)).reshape(out.shape[1:])
    out = out.transpose(0, 3, 1, 2)
    if prep.channels == 3 and out.shape[1] == 1:
        out = np.repeat(out, 3, axis=1)
    return np.ascontiguousarray(out)


def _array_to_uint8(arr: np.ndarray) -> np.ndarray:
    """uint8 as is; any other dtype min-max rescaled per image (N, H, W, C) to 0..255."""
    if arr.dtype == np.uint8:
        return arr
    data = arr.astype(np.float64)
    lo = data.min(axis=(1, 2, 3), keepdims=True)
    span = data.max(axis=(1, 2, 3), keepdims=True) - lo
    scaled = np.where(span > 0, (data - lo) * (255.0 / np.where(span > 0, span, 1.0)), 0.0)
    return np.rint(scaled).astype(np.uint8)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB to (..., 1) luminance with PIL's own ITU-R 601-2 integer formula (same rounding)."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]
