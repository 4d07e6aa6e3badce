"""Tests for medclf.data.cache: hits decode nothing, any change misses, writes are atomic, failures are clear."""

from __future__ import annotations

import json
import shutil
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from medclf.atomic import atomic_write
from medclf.data import Preprocessing, cache, decode_image, load_dataset
from medclf.errors import DataError

PREP = Preprocessing(size_hw=(16, 16), channels=1)


@pytest.fixture
def files(tmp_path: Path, img) -> list[Path]:
    """Four distinct 16x16 PNGs."""
    return [img.write(tmp_path / "img" / f"{i}.png", seed=i) for i in range(4)]


def entry_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_second_load_is_a_hit_that_decodes_nothing(tmp_path: Path, files: list[Path]) -> None:
    first = cache.load_images(files, PREP, cache_dir=tmp_path / "c")
    second = cache.load_images(files, PREP, cache_dir=tmp_path / "c")
    assert (first.hit, first.n_decoded) == (False, 4)
    assert (second.hit, second.n_decoded) == (True, 0)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(second.images[2], decode_image(files[2], PREP))
    assert second.digests == first.digests and len(set(first.digests)) == 4
    assert (cache.STATS.n_hits, cache.STATS.n_misses, cache.STATS.n_decoded) == (1, 1, 4)


def test_a_changed_file_misses_and_only_it_is_decoded(tmp_path: Path, files: list[Path], img) -> None:
    before = cache.load_images(files, PREP, cache_dir=tmp_path / "c", lineage="root")
    img.write(files[1], seed=99)
    after = cache.load_images(files, PREP, cache_dir=tmp_path / "c", lineage="root")
    assert (after.hit, after.n_decoded) == (False, 1)
    assert cache.STATS.n_reused == 3
    np.testing.assert_array_equal(after.images[1], decode_image(files[1], PREP))
    assert not np.array_equal(after.images[1], before.images[1])
    np.testing.assert_array_equal(after.images[[0, 2, 3]], before.images[[0, 2, 3]])


def test_without_a_lineage_a_change_decodes_everything(tmp_path: Path, files: list[Path], img) -> None:
    cache.load_images(files, PREP, cache_dir=tmp_path / "c")
    img.write(files[0], seed=42)
    assert cache.load_images(files, PREP, cache_dir=tmp_path / "c").n_decoded == 4


@pytest.mark.parametrize(
    "other", [Preprocessing((16, 16), 3), Preprocessing((8, 8), 1), Preprocessing((16, 16), 1, "pad")]
)
def test_a_different_preprocessing_misses(tmp_path: Path, files: list[Path], other: Preprocessing) -> None:
    cache.load_images(files, PREP, cache_dir=tmp_path / "c", lineage="root")
    result = cache.load_images(files, other, cache_dir=tmp_path / "c", lineage="root")
    assert (result.hit, result.n_decoded) == (False, 4)
    assert result.images.shape == (4, other.channels, *other.size_hw)


def test_key_depends_on_content_order_and_preprocessing() -> None:
    key = cache.cache_key(["a", "b"], PREP)
    assert key != cache.cache_key(["b", "a"], PREP)
    assert key != cache.cache_key(["a", "b"], Preprocessing((16, 16), 3))
    assert key == cache.cache_key(["a", "b"], Preprocessing((16, 16), 1))


def test_identical_files_are_decoded_once(tmp_path: Path, files: list[Path]) -> None:
    copy = shutil.copy(files[0], tmp_path / "img" / "copy.png")
    result = cache.load_images([*files, Path(copy)], PREP, cache_dir=tmp_path / "c")
    assert result.n_decoded == 4
    assert result.digests[4] == result.digests[0]
    np.testing.assert_array_equal(result.images[4], result.images[0])


def test_writes_leave_only_finished_entries(tmp_path: Path, files: list[Path]) -> None:
    folder = tmp_path / "c"
    result = cache.load_images(files, PREP, cache_dir=folder, lineage="root")
    key = cache.cache_key(result.digests, PREP)
    names = entry_files(folder)
    assert f"{key}.npy" in names and f"{key}.json" in names
    assert len(names) == 3 and sum(n.endswith(".latest") for n in names) == 1
    assert not any(n.endswith(".tmp") for n in names)
    np.testing.assert_array_equal(np.load(folder / f"{key}.npy"), result.images)


def test_atomic_write_removes_its_temporary_file_on_failure(tmp_path: Path) -> None:
    def failing_write(f) -> None:
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(tmp_path / "x.npy", failing_write)
    assert entry_files(tmp_path) == []


def test_a_damaged_entry_is_rebuilt(tmp_path: Path, files: list[Path]) -> None:
    first = cache.load_images(files, PREP, cache_dir=tmp_path / "c")
    entry = tmp_path / "c" / f"{cache.cache_key(first.digests, PREP)}.npy"
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match=rf"entry .*{entry.name} cannot be read"):
        again = cache.load_images(files, PREP, cache_dir=tmp_path / "c")
    assert (again.hit, again.n_decoded) == (False, 4)
    np.testing.assert_array_equal(again.images, first.images)
    assert cache.load_images(files, PREP, cache_dir=tmp_path / "c").hit


def test_an_unwritable_cache_warns_and_still_returns_the_images(tmp_path: Path, files: list[Path]) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(RuntimeWarning, match=r"Could not write the decode cache in .*not-a-folder"):
        result = cache.load_images(files, PREP, cache_dir=blocker)
    assert result.images.shape == (4, 1, 16, 16) and result.n_decoded == 4


def test_default_folder_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDCLF_CACHE", str(tmp_path / "env-cache"))
    assert cache.default_cache_dir() == tmp_path / "env-cache"
    monkeypatch.delenv("MEDCLF_CACHE")
    assert cache.default_cache_dir() == Path.home() / ".cache" / "medclf"


def test_every_undecodable_file_is_reported_at_once(tmp_path: Path, files: list[Path]) -> None:
    (tmp_path / "img" / "empty.png").write_bytes(b"")
    (tmp_path / "img" / "text.png").write_text("hello")
    bad = [files[0], tmp_path / "img" / "empty.png", files[1], tmp_path / "img" / "text.png"]
    message = r"2 image files cannot be decoded: .*empty\.png: .*0 bytes.*text\.png"
    with pytest.raises(DataError, match=message) as info:
        cache.load_images(bad, PREP, cache_dir=tmp_path / "c")
    assert info.value.path == tmp_path / "img" / "empty.png"
    assert not (tmp_path / "c").exists()  # nothing cached from a failed load


def test_identical_bad_files_are_each_reported(tmp_path: Path, files: list[Path]) -> None:
    # byte-identical files are decoded once; each bad one still counts and is named under its own path
    bad = [tmp_path / "img" / f"zero{i}.png" for i in range(12)]
    for path in bad:
        path.write_bytes(b"")
    with pytest.raises(DataError) as info:
        cache.load_images([files[0], *bad], PREP, cache_dir=tmp_path / "c")
    message = str(info.value)
    assert message.startswith("12 image files cannot be decoded: ") and message.endswith("; and 2 more")
    assert all(f"zero{i}.png: " in message for i in range(10)) and message.count("0 bytes") == 10
    two = bad[:2]
    with pytest.raises(DataError, match=r"^2 image files cannot be decoded: .*zero0\.png: .*; .*zero1\.png: "):
        cache.load_images(two, PREP, cache_dir=tmp_path / "c")


def test_a_missing_file_is_a_clear_error(tmp_path: Path, files: list[Path]) -> None:
    with pytest.raises(DataError, match=r"gone\.png: the file does not exist"):
        cache.load_images([*files, tmp_path / "gone.png"], PREP, cache_dir=tmp_path / "c")


# ------------------------------------------------------------------------------------------- integrity
def entry_paths(folder: Path, digests: list[str]) -> tuple[Path, Path]:
    key = cache.cache_key(digests, PREP)
    return folder / f"{key}.npy", folder / f"{key}.json"


def overwrite_rows(array_path: Path, rows: list[int], value: int = 0) -> None:
    """Damage an entry the way a stray write does: same shape and dtype, different pixels, no error on read."""
    images = np.load(array_path)
    images[rows] = value
    np.save(array_path, images)


def clean_decodes(files: list[Path]) -> np.ndarray:
    return np.stack([decode_image(f, PREP) for f in files])


def test_rows_overwritten_with_zeros_are_named_decoded_again_and_rewritten(tmp_path: Path, files: list[Path]) -> None:
    first = cache.load_images(files, PREP, cache_dir=tmp_path / "c")
    array_path, _ = entry_paths(tmp_path / "c", first.digests)
    overwrite_rows(array_path, [1, 3])
    message = rf"{array_path.name} is damaged: 2 of 4 cached images fail their pixel checksum \(.*1\.png, .*3\.png\)"
    with pytest.warns(RuntimeWarning, match=message):
        repaired = cache.load_images(files, PREP, cache_dir=tmp_path / "c")
    assert (repaired.hit, repaired.n_decoded, repaired.n_repaired) == (False, 2, 2)  # only the damaged rows
    np.testing.assert_array_equal(repaired.images, clean_decodes(files))
    assert repaired.checksums == first.checksums
    np.testing.assert_array_equal(np.load(array_path), repaired.images)  # the entry was rewritten
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten entry is a clean hit
        again = cache.load_images(files, PREP, cache_dir=tmp_path / "c")
    assert (again.hit, again.n_decoded) == (True, 0)


def test_a_whole_entry_of_zeros_of_the_same_shape_is_never_returned(tmp_path: Path, files: list[Path]) -> None:
    first = cache.load_images(files, PREP, cache_dir=tmp_path / "c", lineage="root")
    array_path, _ = entry_paths(tmp_path / "c", first.digests)
    np.save(array_path, np.zeros_like(first.images))
    with pytest.warns(RuntimeWarning, match=r"4 of 4 cached images fail"):
        repaired = cache.load_images(files, PREP, cache_dir=tmp_path / "c", lineage="root")
    assert repaired.n_decoded == 4 and cache.STATS.n_repaired == 4
    np.testing.assert_array_equal(repaired.images, clean_decodes(files))


def test_an_unreadable_index_is_a_warning_and_a_rebuild(tmp_path: Path, files: list[Path]) -> None:
    first = cache.load_images(files, PREP, cache_dir=tmp_path / "c")
    _, index_path = entry_paths(tmp_path / "c", first.digests)
    index_path.write_bytes(index_path.read_bytes()[:40])  # truncated mid-write by hand
    with pytest.warns(RuntimeWarning, match=rf"missing or unreadable index \({index_path.name}\)"):
        again = cache.load_images(files, PREP, cache_dir=tmp_path / "c")
    assert (again.hit, again.n_decoded) == (False, 4)
    np.testing.assert_array_equal(again.images, first.images)
    assert json.loads(index_path.read_text())["checksums"] == first.checksums


def test_an_index_with_altered_checksums_makes_its_rows_decode_again(tmp_path: Path, files: list[Path]) -> None:
    first = cache.load_images(files, PREP, cache_dir=tmp_path / "c")
    _, index_path = entry_paths(tmp_path / "c", first.digests)
    index = json.loads(index_path.read_text())
    index["checksums"][2] = "0" * 16
    index_path.write_text(json.dumps(index))
    with pytest.warns(RuntimeWarning, match=r"1 of 4 cached images fail .*2\.png"):
        again = cache.load_images(files, PREP, cache_dir=tmp_path / "c")
    assert again.n_decoded == 1
    np.testing.assert_array_equal(again.images, first.images)


def test_damaged_rows_of_the_previous_entry_are_not_reused(tmp_path: Path, files: list[Path], img) -> None:
    first = cache.load_images(files, PREP, cache_dir=tmp_path / "c", lineage="root")
    array_path, _ = entry_paths(tmp_path / "c", first.digests)
    overwrite_rows(array_path, [0], value=255)
    img.write(files[3], seed=99)  # a miss: rows come from the previous entry of the lineage
    with pytest.warns(RuntimeWarning, match=r"1 of 4 cached images fail their pixel checksum \(row 0\)"):
        after = cache.load_images(files, PREP, cache_dir=tmp_path / "c", lineage="root")
    assert (after.n_decoded, cache.STATS.n_reused) == (2, 2)  # the damaged row and the edited file
    np.testing.assert_array_equal(after.images, clean_decodes(files))


def test_checksums_are_per_row_and_follow_every_pixel() -> None:
    images = np.zeros((3, 1, 8, 8), dtype=np.uint8)
    before = cache.pixel_checksums(images)
    images[1, 0, 7, 7] = 1
    after = cache.pixel_checksums(images)
    assert before[0] == before[1] == before[2] and len(before[0]) == 16
    assert (after[0], after[2]) == (before[0], before[2]) and after[1] != before[1]


def test_original_sizes_survive_a_cached_load(tmp_path: Path, img) -> None:
    tall = img.write(tmp_path / "img" / "tall.png", img.gradient(40, 12))
    rgb = img.write(tmp_path / "img" / "rgb.jpg", img.gradient(9, 30, channels=3))
    first = cache.load_images([tall, rgb], PREP, cache_dir=tmp_path / "c")
    second = cache.load_images([tall, rgb], PREP, cache_dir=tmp_path / "c")
    assert second.hit
    assert first.sizes.tolist() == second.sizes.tolist() == [[40, 12], [9, 30]]


def test_a_jpeg_decoded_at_reduced_scale_reports_its_full_size(tmp_path: Path, img) -> None:
    big = img.write(tmp_path / "img" / "big.jpg", img.gradient(256, 128))  # draft() decodes it at 1/4 scale
    assert cache.load_images([big], PREP, cache_dir=tmp_path / "c").sizes.tolist() == [[256, 128]]


# ----------------------------------------------------------------------------------- fingerprint of pixels
def test_a_changed_decoded_pixel_changes_the_fingerprint(
    folder_tree: Path, make_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # same files, different pixels (a decoder that changed with a library upgrade, or a cache nobody can check)
    source = {"type": "folder", "path": str(folder_tree)}
    base = load_dataset(make_config(source))
    decode = cache.decode_image_with_size

    def one_pixel_off(path: Path, prep: Preprocessing):
        pixels, size = decode(path, prep)
        if path.name == "c.png":
            pixels = pixels.copy()
            pixels[0, 0, 0] ^= 1
        return pixels, size

    monkeypatch.setattr(cache, "decode_image_with_size", one_pixel_off)
    changed = load_dataset(make_config(source, cache_dir=str(folder_tree.parent / "fresh-cache")))
    assert int(np.sum(changed.images != base.images)) == 1
    assert changed.fingerprint != base.fingerprint
    repaired = load_dataset(make_config(source))  # the original cache, unchanged: the original fingerprint
    assert repaired.fingerprint == base.fingerprint


def test_a_damaged_cache_keeps_the_fingerprint_of_the_clean_pixels(folder_tree: Path, make_config) -> None:
    config = make_config({"type": "folder", "path": str(folder_tree)})
    base = load_dataset(config)
    (entry,) = [p for p in Path(config.cache_dir).glob("*.npy")]
    np.save(entry, np.zeros_like(base.images))
    with pytest.warns(RuntimeWarning, match="4 of 4 cached images fail"):
        again = load_dataset(config)
    np.testing.assert_array_equal(again.images, base.images)
    assert again.fingerprint == base.fingerprint


def test_an_array_source_fingerprint_follows_its_pixels(tmp_path: Path, make_config) -> None:
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (6, 16, 16), dtype=np.uint8),
              "train_labels": np.array([0, 1, 0, 1, 0, 1])}
    np.savez(tmp_path / "a.npz", **arrays)
    base = load_dataset(make_config({"type": "npz", "path": str(tmp_path / "a.npz")}))
    arrays["train_images"][4, 3, 3] ^= 1
    np.savez(tmp_path / "b.npz", **arrays)
    changed = load_dataset(make_config({"type": "npz", "path": str(tmp_path / "b.npz")}))
    assert changed.fingerprint != base.fingerprint


# ------------------------------------------------------------------------------------------- memory-mapped
def test_mmap_loads_map_the_entry_read_only_and_match_ram(tmp_path: Path, files: list[Path]) -> None:
    copy = Path(shutil.copy(files[0], tmp_path / "img" / "copy.png"))  # decoded once, copied in the map
    (tmp_path / "img" / "bad.png").write_bytes(b"")  # skipped: the map is compacted in place
    paths = [*files[:2], tmp_path / "img" / "bad.png", *files[2:], copy]
    ram = cache.load_images(paths, PREP, cache_dir=tmp_path / "ram", on_bad_image="skip")
    miss = cache.load_images(paths, PREP, cache_dir=tmp_path / "c", on_bad_image="skip", mmap=True)
    hit = cache.load_images(paths[:2] + paths[3:], PREP, cache_dir=tmp_path / "c", mmap=True)
    assert (miss.hit, hit.hit, [i for i, _ in miss.failed]) == (False, True, [2])
    for result in (miss, hit):
        assert isinstance(result.images, np.memmap) and not result.images.flags.writeable
        np.testing.assert_array_equal(result.images, ram.images)
        assert result.checksums == ram.checksums
    assert Path(hit.images.filename).name == Path(miss.images.filename).name
    assert entry_files(tmp_path / "c") == entry_files(tmp_path / "ram")  # the temporary build file is gone
    (key_npy,) = (tmp_path / "c").glob("*.npy")
    assert key_npy.read_bytes() == next((tmp_path / "ram").glob("*.npy")).read_bytes()


def test_mmap_build_decodes_in_chunks_and_leaves_nothing_on_failure(
    tmp_path: Path, files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "_ROWS_BYTES", 2 * 16 * 16)  # two decoded images at a time
    result = cache.load_images(files, PREP, cache_dir=tmp_path / "c", mmap=True)
    np.testing.assert_array_equal(result.images, clean_decodes(files))
    (tmp_path / "img" / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png"):
        cache.load_images([*files, tmp_path / "img" / "empty.png"], PREP, cache_dir=tmp_path / "d", mmap=True)
    assert not any((tmp_path / "d").iterdir())  # the temporary build file was removed


def test_a_damaged_mapped_entry_is_repaired(tmp_path: Path, files: list[Path]) -> None:
    first = cache.load_images(files, PREP, cache_dir=tmp_path / "c")
    array_path, _ = entry_paths(tmp_path / "c", first.digests)
    overwrite_rows(array_path, [1])
    with pytest.warns(RuntimeWarning, match="1 of 4 cached images fail their pixel checksum"):
        repaired = cache.load_images(files, PREP, cache_dir=tmp_path / "c", mmap=True)
    assert repaired.n_repaired == 1 and isinstance(repaired.images, np.memmap)
    np.testing.assert_array_equal(repaired.images, clean_decodes(files))


def test_checksums_of_a_map_stream_through_the_page_cache(tmp_path: Path) -> None:
    # 32 MiB mapped: a whole-set copy would allocate 32 MiB (numpy reports its buffers to tracemalloc, which
    # sees the peak; RssAnon after the call would not, the copy being freed by then); rows read through the
    # map allocate nothing of that size
    images = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(512, 1, 256, 256))
    images[:] = 7
    images.flush()
    del images
    mapped = np.load(tmp_path / "big.npy", mmap_mode="r")
    tracemalloc.start()
    try:
        checksums = cache.pixel_checksums(mapped)
        peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert len(set(checksums)) == 1 and len(checksums) == 512
    assert peak_mib < 4, f"checksumming a 32 MiB map allocated {peak_mib:.0f} MiB at its peak"
