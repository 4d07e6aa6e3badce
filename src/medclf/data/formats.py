"""Medical formats and intensity normalisation: DICOM (pydicom), NIfTI (nibabel), and the mapping of any image
deeper than 8 bits to 0..255.

Each reader returns a 2-D (H, W) or RGB (H, W, 3) uint8 array, already normalised, so that the decode cache
stores what the model sees and the normalisation settings (part of :meth:`Preprocessing.key`) are part of the
cache key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medclf.data.dataset import Preprocessing
from medclf.errors import DataError

__all__ = ["DICOM_EXTENSIONS", "NIFTI_EXTENSIONS", "dicom_ids", "has_dicom_marker", "is_dicom", "is_nifti",
           "normalize_intensity", "read_dicom", "read_nifti"]

DICOM_EXTENSIONS = (".dcm", ".dicom")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")


def is_dicom(path: str | Path) -> bool:
    """Whether ``path`` is DICOM: a ``.dcm``/``.dicom`` name, or a name without extension (``IM0001``, as
    scanners export them) whose file has the ``DICM`` marker at byte 128. ``DICOMDIR`` (an index of a DICOM
    medium, no image) is not."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in DICOM_EXTENSIONS:
        return True
    return suffix == "" and path.name.upper() != "DICOMDIR" and has_dicom_marker(path)


def has_dicom_marker(path: str | Path) -> bool:
    """Whether the file has the DICOM Part 10 marker ``DICM`` after its 128-byte preamble (False if unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:  # missing, a folder, no permission: not a DICOM file we can list
        return False


def dicom_ids(path: str | Path) -> tuple[str, str]:
    """(PatientID, StudyInstanceUID) of a DICOM file, each "" when absent, blank or unreadable.

    Reads only the header up to those tags (no pixel data), so listing a large tree stays cheap; a file
    that cannot be parsed gives ("", "") here and is reported by the decoder, which reads it in full.
    """
    import warnings

    import pydicom

    try:
        with warnings.catch_warnings():  # pydicom warns about damaged files; the decoder reports them once
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID", "StudyInstanceUID"])
        return str(ds.get("PatientID", "") or "").strip(), str(ds.get("StudyInstanceUID", "") or "").strip()
    except Exception:  # noqa: BLE001 - pydicom raises many types for damaged files; the decoder names them
        return "", ""


def is_nifti(path: str | Path) -> bool:
    name = Path(path).name.lower()
    return any(name.endswith(ext) for ext in NIFTI_EXTENSIONS)


def normalize_intensity(arr: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Map a numeric image to uint8 0..255 by ``prep.normalization``.

    ``minmax``: the image's minimum to 0 and maximum to 255; ``percentile``: clip to ``prep.percentiles``
    (percent) first; ``window``: the range ``center +- width / 2`` of ``prep.window`` to 0..255, clipped.
    NaN and infinite values count as the darkest finite value.
    """
    data = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.all():
        data = np.where(finite, data, data[finite].min() if finite.any() else 0.0)
    if prep.normalization == "window" and prep.window is not None:
        center, width = prep.window
        lo, hi = center - width / 2, center + width / 2
    elif prep.normalization == "percentile":
        lo, hi = (float(v) for v in np.percentile(data, prep.percentiles))
    else:
        lo, hi = float(data.min()), float(data.max())
    return _scale(data, lo, hi)


def _scale(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(data.shape, dtype=np.uint8)
    return np.rint(np.clip((data - lo) * (255.0 / (hi - lo)), 0, 255)).astype(np.uint8)


# --------------------------------------------------------------------------------------------------- DICOM
def read_dicom(path: Path, prep: Preprocessing) -> np.ndarray:
    """One DICOM image as uint8 (H, W) or (H, W, 3).

    The modality LUT (Modality LUT Sequence, or rescale slope and intercept) is applied first; then, when
    ``prep.dicom_voi`` and the file has one, the file's VOI LUT Sequence or else its first window center/width
    (pydicom's precedence), unless ``prep.normalization`` is ``"window"``: an explicit window wins; otherwise
    ``prep.normalization``. MONOCHROME1 (white is zero) is inverted. Multi-frame files give their middle frame.

    Raises:
        DataError: not a DICOM file, no pixel data, or pixel data pydicom cannot decode.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except InvalidDicomError:
        raise DataError("is not a DICOM file (no DICM preamble); replace or remove it", path=path) from None
    except (AttributeError, KeyError):
        raise DataError("the DICOM file has no pixel data (PixelData); it is not an image", path=path) from None
    except Exception as error:  # pydicom raises many types for truncated or compressed data  # noqa: BLE001
        raise DataError(
            f"the DICOM pixel data cannot be decoded ({type(error).__name__}: {error}); the file is truncated, "
            "corrupt or compressed with a codec that is not installed (pylibjpeg, gdcm)",
            path=path,
        ) from None
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    if pixels.ndim == (4 if samples > 1 else 3):  # multi-frame: the middle frame
        pixels = pixels[len(pixels) // 2]
    if samples > 1:
        return pixels.astype(np.uint8) if pixels.dtype == np.uint8 else normalize_intensity(pixels, prep)
    out = _dicom_to_uint8(pixels, ds, prep)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 255 - out  # MONOCHROME1 shows its minimum as white
    return out


def _dicom_to_uint8(pixels: np.ndarray, ds: object, prep: Preprocessing) -> np.ndarray:
    """Stored pixels to uint8 in the DICOM order: the modality LUT (or rescale), then the VOI transform."""
    apply_modality_lut, _ = _pydicom_luts()
    values = apply_modality_lut(pixels, ds)
    # an explicit config window is the user's choice for every file; the file's own VOI only stands in for
    # minmax/percentile, which know nothing of the modality
    if prep.dicom_voi and prep.normalization != "window":
        voi = _apply_file_voi(values, ds)
        if voi is not None:
            return voi
    return normalize_intensity(values, prep)


def _apply_file_voi(values: np.ndarray, ds: object) -> np.ndarray | None:
    """The file's VOI LUT Sequence or window center/width applied to modality values, as uint8; None if it
    has neither (or a window pydicom rejects, such as a width below 1).

    pydicom's precedence (``apply_voi_lut(prefer_lut=True)``): a VOI LUT Sequence wins over a window. The
    output spans the LUT's own entries (many files declare 16-bit entries and use 12), or for a window the
    range pydicom maps onto (the stored bit depth after rescale), which becomes 0..255.
    """
    _, apply_voi_lut = _pydicom_luts()
    lut = ds.get("VOILUTSequence")  # type: ignore[attr-defined]
    try:
        if lut and "LUTDescriptor" in lut[0] and "LUTData" in lut[0]:
            n_entries, first_mapped = int(lut[0].LUTDescriptor[0]) or 2**16, int(lut[0].LUTDescriptor[1])
            domain = np.arange(first_mapped, first_mapped + n_entries, dtype=np.int64)
            entries = apply_voi_lut(domain, ds).astype(np.float64)  # every output the LUT can give
            # LUT inputs are whole numbers; clipping to the LUT's domain keeps pydicom's uint16 index valid
            inputs = np.clip(np.rint(values), domain[0], domain[-1]).astype(np.int64)
            return _scale(apply_voi_lut(inputs, ds).astype(np.float64), entries.min(), entries.max())
        if "WindowCenter" not in ds or "WindowWidth" not in ds:  # type: ignore[operator]
            return None
        windowed = apply_voi_lut(np.asarray(values, dtype=np.float64), ds)
        lo, hi = apply_voi_lut(np.array([-np.inf, np.inf]), ds)  # the window's output range (y_min, y_max)
    except (ValueError, NotImplementedError):  # width < 1, unknown VOI LUT Function or LUT entry depth
        return None  # the normalisation stands in, as for a file with no VOI
    return _scale(windowed, float(lo), float(hi))


def _pydicom_luts() -> tuple:
    """pydicom's ``apply_modality_lut`` and ``apply_voi_lut`` (moved to ``pydicom.pixels`` in pydicom 3)."""
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    return apply_modality_lut, apply_voi_lut


# --------------------------------------------------------------------------------------------------- NIfTI
def read_nifti(path: Path, prep: Preprocessing) -> np.ndarray:
    """One 2-D slice of a NIfTI volume as uint8 (H, W), normalised by ``prep``.

    A 3-D volume is sliced across ``prep.volume_axis`` at ``prep.volume_slice`` ("middle" or an index); a 4-D
    one uses its first volume; a 2-D image is used whole. The slice is rotated 90 degrees so the first voxel
    axis runs left to right, as viewers show it.

    Raises:
        DataError: not a NIfTI file, or the slice index is outside the volume.
    """
    import nibabel as nib

    try:
        volume = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    except Exception as error:  # nibabel raises ImageFileError, EOFError, zlib errors...  # noqa: BLE001
        raise DataError(
            f"cannot be read as NIfTI ({type(error).__name__}: {error}); the file is truncated or not NIfTI",
            path=path,
        ) from None
    while volume.ndim > 3:
        volume = volume[..., 0]
    if volume.ndim == 3:
        axis, n = prep.volume_axis, volume.shape[prep.volume_axis]
        index = n // 2 if prep.volume_slice == "middle" else int(prep.volume_slice)
        if not -n <= index < n:
            raise DataError(
                f"data.volume.slice {index} is outside the volume's {n} slices along axis {axis}", path=path
            )
        volume = np.take(volume, index, axis=axis)
    if volume.ndim != 2:
        raise DataError(f"the NIfTI image has shape {volume.shape}; expected 2-D, 3-D or 4-D", path=path)
    return normalize_intensity(np.rot90(volume), prep)
