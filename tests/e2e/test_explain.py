"""`medclf explain` on a real tiny run: PNGs and a CSV, a bad input as one paragraph, and the report's gallery
showing each confidently wrong image beside its Grad-CAM overlay."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from medclf.cli import app

runner = CliRunner()


def test_explain_writes_one_png_per_image_and_a_csv(trained_run: Path, tiny_splits: Path, tmp_path: Path):
    out = tmp_path / "why"
    done = runner.invoke(app, ["explain", str(trained_run), str(tiny_splits / "test" / "circle"), "--out", str(out),
                               "--quiet"])
    assert done.exit_code == 0, done.output
    inputs = sorted((tiny_splits / "test" / "circle").glob("*.png"))
    with open(out / "explanations.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(r["path"]).name for r in rows] == [p.name for p in inputs]
    assert {r["explained"] for r in rows} <= {"blank", "circle", "square"}
    assert all(r["explained"] == r["predicted"] for r in rows)
    assert all(r["target_layer"].startswith("net.") for r in rows)
    assert all(0 <= float(r["probability"]) <= 1 for r in rows)
    pngs = sorted(out.glob("*.png"))
    assert sorted(r["png"] for r in rows) == [p.name for p in pngs]
    picture = np.asarray(Image.open(pngs[0]))
    assert picture.ndim == 3 and picture.shape[1] == 2 * picture.shape[0]  # the image beside its overlay
    left, right = picture[:, : picture.shape[0]], picture[:, picture.shape[0]:]
    assert (left[..., 0] == left[..., 2]).all() and not np.array_equal(left, right)  # grey image, coloured map


def test_explain_a_chosen_class_with_one_fold(trained_run: Path, tiny_splits: Path, tmp_path: Path):
    image = sorted((tiny_splits / "test" / "square").glob("*.png"))[0]
    done = runner.invoke(app, ["explain", str(trained_run), str(image), str(image), "--out", str(tmp_path / "x"),
                               "--fold", "1", "--class", "blank", "--quiet"])
    assert done.exit_code == 0, done.output
    with open(tmp_path / "x" / "explanations.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["explained"] for r in rows] == ["blank", "blank"]
    assert [r["png"] for r in rows] == [f"{image.stem}.png", f"{image.stem}-2.png"]  # a collision gets a suffix


def test_bad_inputs_are_one_paragraph(trained_run: Path, tmp_path: Path):
    done = runner.invoke(app, ["explain", str(trained_run), str(tmp_path / "nowhere.png"), "--out",
                               str(tmp_path / "x")])
    assert done.exit_code == 2 and "Traceback" not in done.output
    message = " ".join(done.stderr.split())
    assert "nowhere.png" in message and "does not exist" in message
    done = runner.invoke(app, ["explain", str(trained_run), str(trained_run), "--class", "triangle", "--out",
                               str(tmp_path / "x")])
    assert done.exit_code == 2
    assert "--class 'triangle' is not a class" in " ".join(done.stderr.split())
    assert "blank, circle, square" in " ".join(done.stderr.split())


def test_the_report_shows_each_wrong_image_beside_its_overlay(trained_run: Path, copy_run):
    from medclf.reporting import write_report
    from medclf.runfolder import read_gallery, read_gallery_overlays

    out = copy_run(trained_run)
    images, overlays = read_gallery(out), read_gallery_overlays(out)
    assert images and set(overlays) == set(images)
    assert all(o.shape == (16, 16, 3) and o.dtype == np.uint8 for o in overlays.values())
    html = write_report(out).read_text()
    assert "beside its Grad-CAM overlay" in html
    # a gallery kept before overlays existed still renders, images only
    from medclf.runfolder import write_gallery

    write_gallery(out, list(images), np.stack(list(images.values())))
    html = write_report(out).read_text()
    assert "beside its Grad-CAM overlay" not in html and "The images are not shown" not in html
