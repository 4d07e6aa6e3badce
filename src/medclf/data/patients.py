"""Patient and study ids for file layouts that give none (``data.patient_ids``).

A folder of DICOM files is rarely a folder per patient: exports are sorted by date, series or diagnosis, and
one patient's images end up in several folders (or several splits). The files themselves say whose they are,
so by default (``header``) a DICOM file's ``PatientID`` and ``StudyInstanceUID`` become its patient and study
id; ``folder`` takes the folder below the class folder as the patient; ``none`` leaves every image its own
group. Layouts that give ids (a manifest's patient column, the ``patients`` tree, the phantoms) keep theirs.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from medclf.data.formats import dicom_ids, is_dicom

if TYPE_CHECKING:
    from medclf.data.layouts.base import SourceListing

__all__ = ["fill_patient_ids"]


def fill_patient_ids(listing: SourceListing, *, mode: str, patient_folder_depth: int | None) -> SourceListing:
    """``listing`` with its missing ``groups`` (patients) and ``studies`` filled in as ``mode`` says.

    Args:
        listing: what a layout found; array listings and listings with ids of their own are returned as given.
        mode: ``header`` (DICOM PatientID / StudyInstanceUID; other files and files without one are their own
            group), ``folder`` (the folder right below the class folder; for a manifest, the image's folder)
            or ``none``.
        patient_folder_depth: for ``folder``, how many folders (split, fold, class) sit above the patient
            folder in an id, from the layout's :class:`~medclf.data.layouts.LayoutInfo`; None: the image's
            own folder.
    """
    if listing.files is None or mode == "none":
        return listing
    if mode == "folder":
        if listing.groups is None:
            listing.groups = _folder_patients(listing.ids, patient_folder_depth)
        return listing
    if listing.groups is None or listing.studies is None:
        patients, studies = _header_ids(listing.files)
        if listing.groups is None and any(patients):
            listing.groups = [p or id_ for p, id_ in zip(patients, listing.ids)]
            _warn_single_patient(patients)
        if listing.studies is None and any(studies):
            listing.studies = [s or id_ for s, id_ in zip(studies, listing.ids)]
    return listing


def _header_ids(files: list[Path]) -> tuple[list[str], list[str]]:
    """(PatientID, StudyInstanceUID) of each DICOM file, "" for other files and for absent or unreadable tags."""
    patients, studies = [], []
    for file in files:
        patient, study = _file_ids(file) if is_dicom(file) else ("", "")
        patients.append(patient)
        studies.append(study)
    return patients, studies


def _file_ids(file: Path) -> tuple[str, str]:
    """:func:`dicom_ids`, remembered for the process while the file keeps its size and modification time (a
    sweep loads its data once per variant; a header costs milliseconds, a stat microseconds)."""
    try:
        stat = file.stat()
    except OSError:
        return dicom_ids(file)
    return _remembered_ids(str(file), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1 << 18)
def _remembered_ids(path: str, size: int, mtime_ns: int) -> tuple[str, str]:
    return dicom_ids(path)


def _folder_patients(ids: list[str], depth: int | None) -> list[str]:
    """The folder ``depth`` folders down in each id (below the class folder), or with ``depth`` None the image's
    folder (a manifest); an image with no such folder is its own group."""
    out = []
    for id_ in ids:
        parts = PurePosixPath(id_).parts[:-1]
        if depth is not None:
            out.append(parts[depth] if len(parts) > depth else id_)
        else:
            out.append("/".join(parts) if parts else id_)
    return out


def _warn_single_patient(patients: list[str]) -> None:
    """Anonymisation often blanks every PatientID to one value; grouping by it would make one giant patient."""
    named = [p for p in patients if p]
    if len(named) > 1 and len(set(named)) == 1:
        warnings.warn(
            f"all {len(named)} DICOM files carry the same PatientID {named[0]!r}, so they are one patient for "
            "grouped splits and the audit; if the data was anonymised that way, set data.patient_ids: folder "
            "or none",
            RuntimeWarning,
            stacklevel=3,
        )
