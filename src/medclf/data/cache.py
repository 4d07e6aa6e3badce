"""The on-disk decode cache: every image is decoded once per preprocessing, then read back as one array.

A cache folder (``data.cache_dir``, else ``$MEDCLF_CACHE``, else ``~/.cache/medclf``) holds::

    <key>.npy         (N, C, H, W) uint8, one row per file, in the order of the files that made the key
    <key>.json        the index: the sha256 of each of those files (lets a later entry reuse rows), the xxh3-64
                      checksum of each row's pixel bytes, each image's own (height, width), the preprocessing
    <lineage>.latest  the key last loaded for one source (its root folder) under one preprocessing

``key`` hashes the ordered file digests, :meth:`Preprocessing.key` and :data:`CACHE_VERSION`, so a change to any
file's bytes, to the file list or to the preprocessing is a miss, and the next fold or run of the same data is a
hit that decodes nothing. Digests are of file bytes: reading bytes is cheap, decoding is not.

On a miss, the previous entry of the same source (found through its lineage pointer) supplies every row whose
file content is unchanged, so adding, removing or editing a few files decodes only those files. Files with
identical bytes are decoded once. Writes go to a temporary name in the same folder and are renamed into place
(``os.replace``), so a crash or a concurrent run never leaves a half-written entry under a real name.

Every read verifies each row against its checksum, because a cached array damaged on disk (a bad sector, a
stray write, a file swapped by hand) keeps its shape and would otherwise be trained on without a word. Rows that
fail are named in a warning, decoded again from their files and the entry is rewritten; an entry whose array or
index cannot be read at all is rebuilt the same way. Checksumming 7,000 images of 128x128 pixels takes 0.03 s
(grayscale) to 0.07 s (RGB) on a busy 2-core CPU, under half of reading the entry and under 0.1 % of one
training epoch (``benchmarks/cache_integrity.py``, docs/benchmarks.md).

With ``mmap`` (``data.memory``), an entry is read back memory-mapped and read-only: its pages are the file's,
in the page cache, not the process's own memory. A miss then decodes into a temporary ``.npy`` beside the
entry a chunk at a time and writes the entry from it, so the whole set is never assembled in memory; the
checksums are computed row by row through the map.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import xxhash

from medclf.atomic import atomic_write, remove_stale_temporaries
from medclf.data.dataset import Preprocessing
from medclf.data.decode import decode_image_with_size
from medclf.errors import DataError

__all__ = [
    "CACHE_VERSION",
    "STATS",
    "CacheStats",
    "CachedImages",
    "cache_key",
    "default_cache_dir",
    "digest_files",
    "file_digest",
    "load_images",
    "pixel_checksums",
]

# Bump when decoding changes what an image becomes (resampling, intensity mapping): every old entry misses.
CACHE_VERSION = 3  # 3: per-row pixel checksums and original sizes in the index; 2: DICOM VOI LUTs after rescale

_CHUNK_BYTES = 1 << 20
_ROWS_BYTES = 64 << 20  # decoded pixels held at once while an entry is built (the rest is already in place)
_T = TypeVar("_T")
_Row = tuple[np.ndarray, "np.ndarray | tuple[int, int]"]  # (C, H, W) pixels and the original (height, width)


@dataclass
class CacheStats:
    """Counters since the last :meth:`reset`, summed over every :func:`load_images` call of this process."""

    n_decoded: int = 0  # files decoded (content not found in the cache)
    n_reused: int = 0  # rows copied from the previous entry of the same source
    n_hits: int = 0  # loads answered entirely from the cache
    n_misses: int = 0  # loads that had to build a new entry
    n_repaired: int = 0  # cached rows that failed their checksum (decoded again)

    def reset(self) -> None:
        """Set every counter back to zero."""
        self.n_decoded = self.n_reused = self.n_hits = self.n_misses = self.n_repaired = 0


STATS = CacheStats()


@dataclass(frozen=True)
class CachedImages:
    """The result of :func:`load_images`."""

    images: np.ndarray  # (N, C, H, W) uint8
    digests: list[str]  # sha256 hex of each file's bytes, index-aligned with images
    n_decoded: int  # files decoded by this call (0 on a cache hit)
    hit: bool  # whether the whole array came from the cache
    failed: list[tuple[int, str]] = field(default_factory=list)  # (position in paths, reason) of skipped files
    checksums: list[str] = field(default_factory=list)  # xxh3-64 hex of each row's pixel bytes (verified)
    sizes: np.ndarray | None = None  # (N, 2) int64: each image's own (height, width) before resizing, pixels
    n_repaired: int = 0  # cached rows that failed their checksum and were decoded again by this call


def default_cache_dir() -> Path:
    """``$MEDCLF_CACHE`` when set, else ``~/.cache/medclf``."""
    env = os.environ.get("MEDCLF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medclf"


def file_digest(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes; a DataError naming the file when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK_BYTES):
                digest.update(chunk)
    except FileNotFoundError:
        raise DataError("the file does not exist (was it moved or deleted while loading?)", path=path) from None
    except OSError as error:
        raise DataError(f"cannot read the file ({error.strerror or error})", path=path) from None
    return digest.hexdigest()


def digest_files(paths: Sequence[Path], *, n_threads: int | None = None) -> list[str]:
    """sha256 of every file, in order (hashlib releases the GIL, so threads overlap reading and hashing)."""
    return _parallel_map(file_digest, paths, n_threads)


def pixel_checksums(images: np.ndarray) -> list[str]:
    """xxh3-64 (16 hex) of each row's pixel bytes of an (N, ...) array (about 4 GiB/s on one CPU core)."""
    images = np.ascontiguousarray(images)
    return [xxhash.xxh3_64_hexdigest(row) for row in images]


def cache_key(digests: Sequence[str], prep: Preprocessing) -> str:
    """The name of the cache entry for these file contents, in this order, under this preprocessing."""
    h = hashlib.sha256(f"medclf-cache-v{CACHE_VERSION}\n{prep.key()}\n".encode())
    h.update("\n".join(digests).encode())
    return h.hexdigest()[:32]

def load_images(
    paths: Sequence[Path],
    prep: Preprocessing,
    *,
    cache_dir: str | Path | None = None,
    lineage: str | None = None,
    n_threads: int | None = None,
    on_bad_image: str = "fail",
    mmap: bool = False,
) -> CachedImages:
    """Decode ``paths`` under ``prep``, or read them back from the cache when already decoded.

    Cached rows are verified against their pixel checksums; rows that fail are named in a RuntimeWarning,
    decoded again and the entry rewritten (``n_repaired`` counts them).

    Args:
        paths: image files, in dataset order.
        prep: the preprocessing (part of the cache key).
        cache_dir: the cache folder; None means :func:`default_cache_dir`.
        lineage: a stable name of the source (its root folder): the previous entry with the same lineage and
            preprocessing supplies the rows of unchanged files when this call misses. None: no such reuse.
        n_threads: decoding and hashing threads; default min(4, CPU cores).
        on_bad_image: "fail" raises on files that cannot be decoded; "skip" leaves them out: ``images``,
            ``digests``, ``checksums`` and ``sizes`` then hold only the good files and ``failed`` lists the
            others with the reason.
        mmap: return the images as a read-only ``np.memmap`` of the entry's ``.npy`` (a miss builds the
            entry on disk in chunks); when the cache folder cannot be written they are in memory after all.

    Returns:
        The (N, C, H, W) uint8 images, the file digests, the pixel checksums, the original sizes and how many
        files were decoded.

    Raises:
        DataError: a file cannot be read or decoded (every such file listed), with ``on_bad_image="fail"``.
    """
    paths = [Path(p) for p in paths]
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    remove_stale_temporaries(cache_dir, recursive=False)  # left by a killed write (its pid is gone)
    digests = digest_files(paths, n_threads=n_threads)
    key = cache_key(digests, prep)
    lineage_key = _lineage_key(lineage, prep) if lineage is not None else None

    entry = _read_entry(cache_dir, key, prep, digests=digests, names=[str(p) for p in paths], mmap=mmap)
    if entry is not None and not entry.damaged:
        STATS.n_hits += 1
        if lineage_key is not None:
            _write_safely(cache_dir, lambda: _point_lineage(cache_dir, lineage_key, key))
        return CachedImages(images=entry.images, digests=digests, n_decoded=0, hit=True,
                            checksums=entry.checksums, sizes=entry.sizes)

    known = _previous_rows(cache_dir, lineage_key, prep, current=key, mmap=mmap) if lineage_key is not None else {}
    n_repaired = 0
    if entry is not None:  # only its damaged rows are decoded again
        known |= entry.good_rows()
        n_repaired = len(entry.damaged)
    spill = _spill_path(cache_dir, key) if mmap and paths else None
    result = _build_entry(paths, digests, known, prep, n_threads=n_threads, on_bad_image=on_bad_image, spill=spill)
    STATS.n_repaired += n_repaired
    if len(result.digests):
        key = cache_key(result.digests, prep)  # without the files that failed, if any
        _write_safely(cache_dir, lambda: _write_entry(cache_dir, key, result, prep, lineage_key))
    if isinstance(result.images, np.memmap):
        result = dataclasses.replace(result, images=_reopen_read_only(cache_dir / f"{key}.npy", spill, result.images))
    return dataclasses.replace(result, n_repaired=n_repaired)


def _build_entry(
    paths: list[Path],
    digests: list[str],
    known: dict[str, _Row],
    prep: Preprocessing,
    *,
    n_threads: int | None,
    on_bad_image: str,
    spill: Path | None = None,
) -> CachedImages:
    """The images of ``paths`` from ``known`` rows plus decodes of the rest, without the files that failed.

    ``spill``: build them in this temporary ``.npy`` (memory-mapped) rather than in memory.
    """
    images = _allocate((len(paths), prep.channels, *prep.size_hw), spill)
    try:
        sizes, n_decoded, n_reused, failed = _assemble(images, paths, digests, known, prep, n_threads, on_bad_image)
    except BaseException:
        if spill is not None:
            spill.unlink(missing_ok=True)  # nothing is cached from a failed load
        raise
    STATS.n_misses += 1
    STATS.n_decoded += n_decoded
    STATS.n_reused += n_reused
    if failed:
        # the entry holds the good files only; the next load misses on the full key, reuses every good row
        # through the lineage pointer and retries (only) the bad files
        bad = {i for i, _ in failed}
        good = [i for i in range(len(paths)) if i not in bad]
        images = _compact(images, np.array(good, dtype=np.int64))
        sizes, digests = sizes[good], [digests[i] for i in good]
    return CachedImages(images=images, digests=digests, n_decoded=n_decoded, hit=False, failed=failed,
                        checksums=pixel_checksums(images), sizes=sizes)


def _assemble(
    images: np.ndarray,
    paths: list[Path],
    digests: list[str],
    known: dict[str, _Row],
    prep: Preprocessing,
    n_threads: int | None,
    on_bad_image: str = "fail",
) -> tuple[np.ndarray, int, int, list[tuple[int, str]]]:
    """Fill ``images`` (N, C, H, W) from known rows plus decodes of each new content once.

    Files are decoded a chunk at a time straight into their rows, so only one chunk of decoded pixels is held
    beside ``images`` (which may be a map of a file). Returns (original sizes, n decoded, n reused, failed):
    ``failed`` lists (position, reason) of files that could not be decoded when ``on_bad_image`` is "skip"
    (their rows are left zero); with "fail" they raise.
    """
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    first_of: dict[str, int] = {}
    for i, digest in enumerate(digests):
        first_of.setdefault(digest, i)
    todo = [i for d, i in first_of.items() if d not in known]
    errors: dict[int, DataError] = {}
    step = max(1, _ROWS_BYTES // max(1, int(np.prod(images.shape[1:]))))
    for start in range(0, len(todo), step):
        part = todo[start : start + step]
        for i, result in zip(part, _parallel_map(lambda i: _try_decode(paths[i], prep), part, n_threads)):
            if isinstance(result, DataError):
                errors[i] = result
            else:
                images[i], sizes[i] = result
    n_reused, failed = 0, []
    for i, digest in enumerate(digests):
        first = first_of[digest]
        if digest in known:
            images[i], sizes[i] = known[digest]
            n_reused += 1
        elif first in errors:
            # identical bad files are decoded once but reported each under its own path
            images[i] = 0
            failed.append((i, str(errors[first]).removeprefix(f"{errors[first].path}: ")))
        elif i != first:
            images[i], sizes[i] = images[first], sizes[first]  # a byte-identical file: decoded once
    if failed and on_bad_image != "skip":
        _raise_failures([DataError(reason, path=paths[i]) for i, reason in failed])
    return sizes, len(todo), n_reused, failed


def _spill_path(cache_dir: Path, key: str) -> Path:
    """A temporary beside the entry, named as :func:`medclf.atomic.atomic_write` names its own, so that a
    killed build's leftover is removed by :func:`medclf.atomic.remove_stale_temporaries`."""
    return cache_dir / f".{key}.build.npy.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def _allocate(shape: tuple[int, ...], spill: Path | None) -> np.ndarray:
    """An uninitialised uint8 array of ``shape``: in memory, or mapped from the new file ``spill``."""
    if spill is None:
        return np.empty(shape, dtype=np.uint8)
    try:
        spill.parent.mkdir(parents=True, exist_ok=True)
        return np.lib.format.open_memmap(spill, mode="w+", dtype=np.uint8, shape=shape)
    except (OSError, ValueError) as error:
        _warn(f"cannot build the decode cache entry on disk in {spill.parent} ({error}); the images are decoded "
              "into memory instead (data.memory: mmap needs a writable data.cache_dir)")
        return np.empty(shape, dtype=np.uint8)


def _compact(images: np.ndarray, good: np.ndarray) -> np.ndarray:
    """``images[good]`` for increasing ``good``; a map is compacted in place, a chunk at a time (every source
    row is at or after its destination, so no row is overwritten before it is read)."""
    if not isinstance(images, np.memmap):
        return images[good]
    step = max(1, _ROWS_BYTES // max(1, int(np.prod(images.shape[1:]))))
    for start in range(0, len(good), step):
        part = good[start : start + step]
        images[start : start + len(part)] = images[part]
    return images[: len(good)]


def _reopen_read_only(entry_path: Path, spill: Path | None, built: np.ndarray) -> np.ndarray:
    """The built images as a read-only map: of the written entry, else (the write failed) of the temporary.

    The temporary is removed either way; a map of it stays valid until the array is released.
    """
    built.flush()
    if len(built) == 0:  # every file failed: nothing to map
        images = np.empty(built.shape, dtype=np.uint8)
    else:
        images = _read_array(entry_path, built.shape, mmap=True)
    if images is None and spill is not None:
        images = np.load(spill, mmap_mode="r")[: len(built)]
    if spill is not None:
        spill.unlink(missing_ok=True)
    return built if images is None else images


def _try_decode(path: Path, prep: Preprocessing) -> _Row | DataError:
    """The decoded image and its original size, or the DataError saying why not (collected so one run reports
    every bad file)."""
    try:
        return decode_image_with_size(path, prep)
    except DataError as error:
        return error


def _raise_failures(errors: list[DataError], limit: int = 10) -> None:
    """One DataError for every file that failed to decode (the first ``limit`` listed), carrying the first path."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        listed = "; ".join(str(e) for e in errors[:limit])
        more = f"; and {len(errors) - limit} more" if len(errors) > limit else ""
        combined = DataError(f"{len(errors)} image files cannot be decoded: {listed}{more}")
        combined.path = errors[0].path  # set after: the message already names every file
        raise combined


def _parallel_map(fn: Callable[[_T], object], items: Sequence[_T], n_threads: int | None) -> list:
    """``[fn(x) for x in items]`` on a thread pool; the first failure in item order is raised."""
    n_threads = n_threads or min(4, os.cpu_count() or 1)
    if n_threads <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    pool = ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="medclf")
    try:
        return list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after a failure, skip the work still queued


def _lineage_key(lineage: str, prep: Preprocessing) -> str:
    """The file name stem of the pointer to the last entry of one source under one preprocessing."""
    return hashlib.sha256(f"medclf-lineage-v{CACHE_VERSION}\n{prep.key()}\n{lineage}".encode()).hexdigest()[:32]


# ------------------------------------------------------------------------------------------ entries on disk
@dataclass(frozen=True)
class _Entry:
    """One cache entry as read back, with the rows whose pixels no longer match their checksum."""

    images: np.ndarray  # (N, C, H, W) uint8
    digests: list[str]  # sha256 of each row's file
    checksums: list[str]  # xxh3-64 of each row's pixels, as they are now
    sizes: np.ndarray  # (N, 2) original (height, width)
    damaged: list[int]  # rows that fail their stored checksum

    def good_rows(self) -> dict[str, _Row]:
        """The rows that pass their checksum, by file digest."""
        bad = set(self.damaged)
        return {d: (self.images[i], self.sizes[i]) for i, d in enumerate(self.digests) if i not in bad}


def _read_entry(
    cache_dir: Path,
    key: str,
    prep: Preprocessing,
    *,
    digests: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    mmap: bool = False,
) -> _Entry | None:
    """The entry ``key`` with every row checked against its checksum; None when there is none or it is unusable.

    An entry of which either file exists but cannot be used (unreadable, truncated, wrong shape, an index that
    is not this entry's) is a warning, as are rows that fail their checksum; ``names`` (the files, index-aligned)
    name those rows in it. ``digests``: the file digests the entry must hold, when known. ``mmap``: the array
    is mapped read-only, and checked row by row through the map.
    """
    array_path, index_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if not array_path.exists() and not index_path.exists():
        return None
    index = _read_index(index_path, prep)
    if index is None or (digests is not None and index[0] != list(digests)):
        _warn(f"the decode cache entry {array_path} has a missing or unreadable index ({index_path.name}); "
              "its images are decoded again and the entry rewritten")
        return None
    entry_digests, expected, sizes = index
    images = _read_array(array_path, (len(entry_digests), prep.channels, *prep.size_hw), mmap=mmap)
    if images is None:
        _warn(f"the decode cache entry {array_path} cannot be read or is not the array its index describes "
              f"({len(entry_digests)} images of {prep.channels}x{prep.size_hw[0]}x{prep.size_hw[1]} uint8); "
              "its images are decoded again and the entry rewritten")
        return None
    checksums = pixel_checksums(images)
    damaged = [i for i, (now, then) in enumerate(zip(checksums, expected)) if now != then]
    if damaged:
        shown = [names[i] if names is not None else f"row {i}" for i in damaged[:5]]
        more = f" and {len(damaged) - 5} more" if len(damaged) > 5 else ""
        _warn(f"the decode cache entry {array_path} is damaged: {len(damaged)} of {len(entry_digests)} cached "
              f"images fail their pixel checksum ({', '.join(shown)}{more}); they are decoded again from their "
              "files and the entry rewritten")
    return _Entry(images=images, digests=entry_digests, checksums=checksums, sizes=sizes, damaged=damaged)


def _read_index(path: Path, prep: Preprocessing) -> tuple[list[str], list[str], np.ndarray] | None:
    """(file digests, pixel checksums, (N, 2) sizes) from an entry's index; None when unreadable or not of
    this cache version and preprocessing."""
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, unreadable, truncated, not UTF-8
        return None
    if not isinstance(index, dict) or index.get("version") != CACHE_VERSION or index.get("prep") != prep.key():
        return None
    digests, checksums, sizes = index.get("digests"), index.get("checksums"), index.get("sizes")
    if not all(isinstance(v, list) for v in (digests, checksums, sizes)):
        return None
    if not len(digests) == len(checksums) == len(sizes):
        return None
    try:
        sizes = np.asarray(sizes, dtype=np.int64).reshape(len(digests), 2)
    except (TypeError, ValueError):
        return None
    return digests, checksums, sizes


def _read_array(path: Path, shape: tuple[int, ...], *, mmap: bool = False) -> np.ndarray | None:
    """The cached array at ``path`` (a read-only map with ``mmap``), or None when absent, unreadable or not of
    ``shape`` uint8 (then a miss)."""
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (OSError, ValueError, EOFError):
        return None
    return arr if arr.shape == shape and arr.dtype == np.uint8 else None


def _previous_rows(
    cache_dir: Path, lineage_key: str, prep: Preprocessing, *, current: str, mmap: bool = False
) -> dict[str, _Row]:
    """The verified rows of the last entry of this lineage, by file digest; empty when there is none, it is
    unusable or it is ``current`` (whose rows the caller already has)."""
    try:
        previous = (cache_dir / f"{lineage_key}.latest").read_text().strip()
    except (OSError, ValueError):
        return {}
    if previous == current or not _is_key(previous):  # a pointer names an entry in this folder, nothing else
        return {}
    entry = _read_entry(cache_dir, previous, prep, mmap=mmap)
    return {} if entry is None else entry.good_rows()


def _is_key(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def _write_entry(
    cache_dir: Path, key: str, entry: CachedImages, prep: Preprocessing, lineage_key: str | None
) -> None:
    """Write the array, then its index, then the lineage pointer, each atomically."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(cache_dir / f"{key}.npy", lambda f: np.save(f, entry.images, allow_pickle=False))
    index = {"version": CACHE_VERSION, "prep": prep.key(), "digests": entry.digests,
             "checksums": entry.checksums, "sizes": np.asarray(entry.sizes).tolist()}
    atomic_write(cache_dir / f"{key}.json", lambda f: f.write(json.dumps(index).encode()))
    if lineage_key is not None:
        _point_lineage(cache_dir, lineage_key, key)


def _warn(message: str) -> None:
    """A RuntimeWarning on stderr (where the CLI shows it): the cache repaired itself, but the user should know."""
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _point_lineage(cache_dir: Path, lineage_key: str, key: str) -> None:
    """Make ``key`` the entry a later miss of this lineage reuses rows from."""
    pointer = cache_dir / f"{lineage_key}.latest"
    try:
        if pointer.read_text().strip() == key:
            return  # nothing to do: avoid a write on every cache hit
    except OSError:
        pass
    atomic_write(pointer, lambda f: f.write(key.encode()))


def _write_safely(cache_dir: Path, write: Callable[[], None]) -> None:
    """Run a cache write; a failure (read-only or full disk) costs speed next time, never this run."""
    try:
        write()
    except OSError as error:
        warnings.warn(
            f"Could not write the decode cache in {cache_dir} ({error}); images will be decoded again next "
            "time. Set data.cache_dir or $MEDCLF_CACHE to a writable folder.",
            RuntimeWarning,
            stacklevel=3,
        )
