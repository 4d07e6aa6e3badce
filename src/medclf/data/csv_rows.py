"""CSV files a user hands medclf (a manifest, a list of images to predict): rows with the line each starts on,
and the image file each names, with every error naming the file and the line.

A manifest reads only files below its own folder unless told otherwise (``data.source.allow_outside_paths``):
a CSV received from someone else then cannot point medclf at other files on the machine.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from pathlib import Path

from medclf.data.decode import IMAGE_EXTENSIONS, is_image_file
from medclf.errors import DataError

__all__ = ["csv_image_path", "read_csv_rows"]

_ABSOLUTE_PATH = re.compile(r"^([A-Za-z]:)?/")  # after backslashes became "/": "C:/x", "/x", "//server/x"


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and ``(line number, row)`` pairs of a CSV (UTF-8, a BOM allowed); data rows start at line 2.

    A row's line number is the line it starts on. Every error names the file and the line: bytes that are not
    UTF-8, a row with more or fewer fields than the header, a quote left open (a value spanning lines).
    """
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot be read ({error.strerror or error})", path=path) from None
    reader = csv.reader(io.StringIO(_decode_utf8(path, raw), newline=""))
    header: list[str] = []
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        start = 1  # the line the next record starts on
        for record in reader:
            end = reader.line_num
            if record and not header:
                header = _csv_header(path, [h.strip() for h in record])
            elif record:  # not a blank line
                _check_record(path, start, end, record, header)
                rows.append((start, dict(zip(header, record))))
            start = end + 1
    except csv.Error as error:
        raise DataError(f"line {start}: the CSV cannot be parsed ({error})", path=path) from None
    if not header:
        raise DataError("the CSV is empty; expected a header row, then one row per image", path=path)
    if not rows:
        raise DataError(f"the CSV has a header ({header}) but no rows; expected one row per image", path=path)
    return header, rows


def _decode_utf8(path: Path, raw: bytes) -> str:
    """``raw`` decoded as UTF-8 (a BOM dropped), or a DataError naming the line of the first bad byte."""
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"line {line}: byte {raw[error.start]:#04x} is not UTF-8 ({error.reason}); save the CSV as UTF-8 "
            "(in Excel: CSV UTF-8)",
            path=path,
        ) from None


def _csv_header(path: Path, header: list[str]) -> list[str]:
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise DataError(f"line 1: the header names column {repeated[0]!r} twice ({header}); name each once", path=path)
    return header


def _check_record(path: Path, start: int, end: int, record: list[str], header: list[str]) -> None:
    """A DataError when a data row spans lines (an open quote) or has more or fewer fields than the header."""
    if end > start:
        raise DataError(
            f"lines {start}-{end}: a quoted value runs over {end - start + 1} lines; is a closing quote (\") "
            f"missing on line {start}?",
            path=path,
        )
    if len(record) != len(header):
        raise DataError(
            f"line {start}: {len(record)} fields, but the header has {len(header)} ({', '.join(header)}); a "
            "value that holds a comma must be quoted",
            path=path,
        )


def csv_image_path(csv_path: Path, line: int, value: str | None, *, allow_outside: bool = False) -> Path:
    """The image file a CSV cell names (relative to the CSV's folder), checked to exist and be an image.

    Unless ``allow_outside``, a path that leaves the CSV's folder (absolute, or escaping with ``..``) is refused:
    a manifest then reads only files below its own folder, and every id stays relative to it.
    """
    value = (value or "").strip()
    if not value:
        raise DataError(f"line {line}: empty image path", path=csv_path)
    # a manifest written on Windows uses backslashes; normpath also folds "a/../b"
    posix = value.replace("\\", "/")
    file = Path(os.path.normpath(csv_path.parent / posix))
    if not allow_outside and (_ABSOLUTE_PATH.match(posix) or _outside(file, csv_path.parent)):
        raise DataError(
            f"line {line}: image path {value!r} points outside the CSV's folder ({csv_path.parent}); a manifest "
            "reads only files below its own folder: move the images or the CSV, or set "
            "data.source.allow_outside_paths: true",
            path=csv_path,
        )
    if not file.is_file():
        raise DataError(f"line {line}: image file {value!r} does not exist (looked for {file})", path=csv_path)
    if not is_image_file(file):
        raise DataError(
            f"line {line}: {value!r} is not a supported image (extensions: {' '.join(IMAGE_EXTENSIONS)})",
            path=csv_path,
        )
    return file


def _outside(file: Path, folder: Path) -> bool:
    """Whether ``file`` (normalised) lies outside ``folder``, compared as paths, without touching the disk."""
    relative = os.path.relpath(file, os.path.normpath(folder))
    return relative == os.pardir or relative.startswith(os.pardir + os.sep) or os.path.isabs(relative)
