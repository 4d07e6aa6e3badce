import json
import math

import pytest

from medclf.atomic import atomic_write_csv, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_nan_becomes_null_in_json_and_empty_in_csv(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"auc": math.nan, "xs": [1.0, math.inf]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"auc": None, "xs": [1.0, None]}
    atomic_write_csv(tmp_path / "t.csv", [{"a": 1, "b": math.nan}], ["a", "b"])
    assert (tmp_path / "t.csv").read_text() == "a,b\n1,\n"
