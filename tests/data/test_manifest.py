"""The CSV manifest: malformed files name the line, paths outside the CSV's folder are refused unless allowed,
and no id written to an output is an absolute path."""

from __future__ import annotations

from pathlib import Path

import pytest

from medclf.data import list_image_files, load_dataset
from medclf.errors import DataError


def _images(folder: Path, img, *names: str) -> None:
    for k, name in enumerate(names):
        img.write(folder / name, seed=k + 1)


def _load(make_config, manifest: Path, **source):
    return load_dataset(make_config({"type": "csv", "path": str(manifest), **source}))


# ---------------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize(
    "body, message",
    [
        # Latin-1 "é" on line 3 (an Excel export)
        (b"path,label\na.png,x\nb\xe9.png,y\n", r"m\.csv: line 3: byte 0xe9 is not UTF-8 \(invalid continuation byte\); save the CSV as UTF-8"),
        (b"path,label\na.png,x,extra\nb.png,y\n", r"m\.csv: line 2: 3 fields, but the header has 2 \(path, label\); a value that holds a comma must be quoted"),
        (b"path,label,split\na.png,x,train\nb.png,y\n", r"m\.csv: line 3: 2 fields, but the header has 3"),
        (b'path,label\na.png,"x\nb.png,y\n', r"m\.csv: lines 2-3: a quoted value runs over 2 lines; is a closing quote \(\"\) missing on line 2\?"),
        (b"path,label,path\na.png,x,a.png\n", r"m\.csv: line 1: the header names column 'path' twice"),
        (b"\n\n", r"m\.csv: the CSV is empty"),
    ],
)
def test_a_malformed_csv_names_the_file_and_the_line(tmp_path: Path, make_config, img, body, message) -> None:
    _images(tmp_path, img, "a.png", "b.png")
    (tmp_path / "m.csv").write_bytes(body)
    with pytest.raises(DataError, match=message):
        _load(make_config, tmp_path / "m.csv")


def test_line_numbers_count_bom_blank_lines_crlf_and_quoted_cells(tmp_path: Path, make_config, img) -> None:
    _images(tmp_path, img, "a.png", "b, c.png")
    body = '\ufeffpath,label\r\n\r\na.png,x\r\n"b, c.png",y\r\nmissing.png,y\r\n'
    (tmp_path / "m.csv").write_bytes(body.encode("utf-8"))
    with pytest.raises(DataError, match=r"m\.csv: line 5: image file 'missing\.png' does not exist"):
        _load(make_config, tmp_path / "m.csv")
    (tmp_path / "m.csv").write_bytes(body.rsplit("missing", 1)[0].encode("utf-8"))
    data = _load(make_config, tmp_path / "m.csv")
    assert list(data.ids) == ["a.png", "b, c.png"] and data.class_names == ["x", "y"]


# --------------------------------------------------------------------------------------- outside paths
@pytest.mark.parametrize("value", ["../outside/c.png", "imgs/../../outside/c.png", "{abs}", "C:\\data\\c.png",
                                   "\\\\server\\share\\c.png"])
def test_a_path_outside_the_csvs_folder_is_refused(tmp_path: Path, make_config, img, value: str) -> None:
    _images(tmp_path / "study", img, "imgs/a.png", "imgs/b.png")
    _images(tmp_path, img, "outside/c.png")
    value = value.format(abs=tmp_path / "outside" / "c.png")
    manifest = tmp_path / "study" / "m.csv"
    manifest.write_text(f"path,label\nimgs/a.png,x\nimgs/b.png,y\n{value},y\n")
    message = (rf"m\.csv: line 4: image path {_quoted(value)} points outside the CSV's folder \(.*study\).*"
               r"set data\.source\.allow_outside_paths: true")
    with pytest.raises(DataError, match=message):
        _load(make_config, manifest)


def _quoted(value: str) -> str:
    import re

    return re.escape(repr(value))


def test_allow_outside_paths_reads_them_under_relative_ids(tmp_path: Path, make_config, img) -> None:
    _images(tmp_path / "study", img, "imgs/a.png", "imgs/b.png")
    _images(tmp_path, img, "outside/c.png", "elsewhere/d.png")
    manifest = tmp_path / "study" / "m.csv"
    absolute = tmp_path / "elsewhere" / "d.png"
    manifest.write_text(f"path,label\nimgs/a.png,x\nimgs/b.png,y\n../outside/c.png,y\n{absolute},x\n")
    data = _load(make_config, manifest, allow_outside_paths=True)
    assert list(data.ids) == ["../elsewhere/d.png", "../outside/c.png", "imgs/a.png", "imgs/b.png"]
    assert not any(Path(i).is_absolute() for i in data.ids)
    assert list(data.labels) == [0, 1, 0, 1]
    assert str(tmp_path) not in " ".join(data.ids)


def test_inside_paths_with_dots_stay_allowed(tmp_path: Path, make_config, img) -> None:
    _images(tmp_path, img, "imgs/a.png", "imgs/b.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n./imgs/x/../a.png,x\nimgs\\b.png,y\n")
    assert list(_load(make_config, manifest).ids) == ["imgs/a.png", "imgs/b.png"]


def test_skipped_files_are_listed_by_id_not_by_machine_path(tmp_path: Path, make_config, img) -> None:
    _images(tmp_path, img, "imgs/a.png", "imgs/b.png", "imgs/c.png")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nimgs/a.png,x\nimgs/b.png,y\nimgs/c.png,y\nimgs/broken.png,x\n")
    data = load_dataset(make_config({"type": "csv", "path": str(manifest)}, on_bad_image="skip"))
    assert [p for p, _ in data.skipped] == ["imgs/broken.png"]


def test_prediction_lists_may_point_anywhere(tmp_path: Path, img) -> None:
    """A list given to ``medclf predict`` on the command line is the user's own: no folder rule."""
    _images(tmp_path, img, "outside/c.png")
    listing = tmp_path / "lists" / "todo.csv"
    listing.parent.mkdir()
    listing.write_text("path\n../outside/c.png\n")
    assert list_image_files([listing]) == [tmp_path / "outside" / "c.png"]


def test_a_rare_label_spelt_like_a_common_one_is_warned_about(tmp_path: Path, make_config, img) -> None:
    rows = [f"n{i}.png,normal" for i in range(10)] + [f"p{i}.png,pneumonia" for i in range(10)] + ["t.png,pneumnia"]
    _images(tmp_path, img, *(r.split(",")[0] for r in rows))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.warns(RuntimeWarning, match=r"m\.csv: label 'pneumnia' \(column 'label', 1 rows\) is spelt almost like 'pneumonia' \(10 rows\)"):
        assert _load(make_config, manifest).class_names == ["normal", "pneumnia", "pneumonia"]


def test_similar_labels_of_similar_size_and_numbers_are_not_typos(tmp_path: Path, make_config, img, recwarn) -> None:
    rows = [f"a{i}.png,grade1" for i in range(10)] + [f"b{i}.png,grade2" for i in range(9)]
    rows += [f"c{i}.png,100" for i in range(10)] + ["d.png,10"]
    _images(tmp_path, img, *(r.split(",")[0] for r in rows))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    _load(make_config, manifest)
    assert not [w for w in recwarn if "spelt almost like" in str(w.message)]
