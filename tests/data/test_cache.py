"""Tests for medclf.data.cache: hits decode nothing, any change misses, writes are atomic, failures are clear."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from medclf.atomic import atomic_write
from medclf.data import Preprocessing, cache, decode_image
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
