"""Tests for medclf.data.decode: every supported format and mode, both resize modes, and broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclf.data import Preprocessing, decode_image, resize_array
from medclf.data.decode import fit_to_size, is_image_file
from medclf.errors import DataError

GRAY16 = Preprocessing(size_hw=(16, 16), channels=1)
RGB16 = Preprocessing(size_hw=(16, 16), channels=3)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """PIL's own RGB -> L conversion, the reference for channels=1."""
    return np.asarray(Image.fromarray(rgb).convert("L"))


@pytest.mark.parametrize("name", ["g.png", "g.bmp", "g.tif", "g.tiff", "G.PNG"])
def test_lossless_grayscale_formats_decode_exactly(tmp_path: Path, name: str, img) -> None:
    src = img.gradient()
    out = decode_image(img.write(tmp_path / name, src), GRAY16)
    assert out.shape == (1, 16, 16) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], src)


@pytest.mark.parametrize("name", ["c.png", "c.bmp", "c.tif"])
def test_lossless_rgb_formats_decode_exactly_and_to_luminance(tmp_path: Path, name: str, img) -> None:
    src = img.gradient(channels=3)
    path = img.write(tmp_path / name, src)
    np.testing.assert_array_equal(decode_image(path, RGB16), src.transpose(2, 0, 1))
    np.testing.assert_array_equal(decode_image(path, GRAY16)[0], luminance(src))


def test_grayscale_becomes_three_equal_channels(tmp_path: Path, img) -> None:
    src = img.gradient()
    out = decode_image(img.write(tmp_path / "g.png", src), RGB16)
    assert out.shape == (3, 16, 16)
    for channel in out:
        np.testing.assert_array_equal(channel, src)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_decodes_like_pil(tmp_path: Path, channels: int, img) -> None:
    path = img.write(tmp_path / "c.jpg", img.gradient(channels=3), quality=95)
    out = decode_image(path, Preprocessing(size_hw=(16, 16), channels=channels)).astype(int)
    reference = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
    expected = reference if channels == 3 else luminance(reference.transpose(1, 2, 0))[None]
    assert out.shape == (channels, 16, 16)
    assert np.abs(out - expected).max() <= 2  # libjpeg's own grayscale output may round differently


def test_large_jpeg_draft_decode_matches_a_full_decode(tmp_path: Path, img) -> None:
    big = np.kron(img.gradient(channels=3), np.ones((16, 16, 1), dtype=np.uint8))  # 256x256, smooth blocks
    path = img.write(tmp_path / "big.jpeg", big, quality=95)
    full = np.asarray(Image.open(path).convert("L").resize((16, 16), Image.Resampling.BILINEAR)).astype(int)
    out = decode_image(path, GRAY16)[0].astype(int)
    assert np.abs(out - full).mean() < 3


@pytest.mark.parametrize("name, dtype", [("d.png", "<u2"), ("d.tif", "<u2"), ("b.tif", ">u2"), ("f.tif", "<f4")])
def test_high_bit_depth_is_rescaled_per_image_min_max(tmp_path: Path, name: str, dtype: str, img) -> None:
    src = (img.gradient().astype(np.float64) * 200 + 1000).astype(dtype)  # values 1000..52000: beyond 8 bits
    path = img.write(tmp_path / name, src)
    assert Image.open(path).mode in {"I;16", "I;16B", "I", "F"}
    lo, hi = float(src.min()), float(src.max())
    expected = np.rint((src.astype(np.float64) - lo) * 255 / (hi - lo))
    out = decode_image(path, GRAY16)
    np.testing.assert_allclose(out[0], expected, atol=1)  # float rounding at exact .5 may differ
    assert out.min() == 0 and out.max() == 255


def test_constant_16_bit_image_decodes_to_zeros(tmp_path: Path, img) -> None:
    path = img.write(tmp_path / "flat.png", np.full((16, 16), 4000, dtype=np.uint16))
    np.testing.assert_array_equal(decode_image(path, GRAY16), np.zeros((1, 16, 16), np.uint8))


def test_rgba_is_flattened_on_black(tmp_path: Path, img) -> None:
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:8, :, 3] = 255  # top half opaque, bottom half fully transparent
    out = decode_image(img.write(tmp_path / "a.png", rgba), RGB16)
    np.testing.assert_array_equal(out[:, 0, 0], [200, 100, 50])
    np.testing.assert_array_equal(out[:, 8:, :], 0)


def test_palette_and_bilevel_images(tmp_path: Path, img) -> None:
    rgb = img.gradient(channels=3)
    palette = Image.fromarray(rgb).quantize(colors=16)
    palette.save(tmp_path / "p.png")
    expected = np.asarray(palette.convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(decode_image(tmp_path / "p.png", RGB16), expected)
    Image.fromarray(img.gradient() > 128).save(tmp_path / "bits.png")  # mode "1"
    out = decode_image(tmp_path / "bits.png", GRAY16)
    assert set(np.unique(out)) == {0, 255}
    np.testing.assert_array_equal(out[0] == 255, img.gradient() > 128)


def test_resize_stretches_to_the_target_size(tmp_path: Path, img) -> None:
    src = img.gradient(8, 32)
    out = decode_image(img.write(tmp_path / "wide.png", src), Preprocessing((16, 12), 1, "resize"))
    expected = np.asarray(Image.fromarray(src).resize((12, 16), Image.Resampling.BILINEAR))
    assert out.shape == (1, 16, 12)
    np.testing.assert_array_equal(out[0], expected)


@pytest.mark.parametrize("shape_hw, box", [((8, 16), (4, 12, 0, 16)), ((32, 8), (0, 16, 6, 10))])
def test_pad_keeps_the_aspect_ratio_and_pads_with_zeros(tmp_path: Path, shape_hw, box, img) -> None:
    src = np.full(shape_hw, 200, dtype=np.uint8)
    out = decode_image(img.write(tmp_path / "x.png", src), Preprocessing((16, 16), 3, "pad"))[0]
    top, bottom, left, right = box
    assert out.shape == (16, 16)
    assert (out[top:bottom, left:right] == 200).all()  # content: the source's aspect ratio, centred
    mask = np.zeros_like(out, dtype=bool)
    mask[top:bottom, left:right] = True
    assert (out[~mask] == 0).all()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    src = np.zeros((8, 16), dtype=np.uint8)
    src[:, :8] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display 90 degrees clockwise
    Image.fromarray(src).save(tmp_path / "o.jpg", exif=exif, quality=95)
    out = decode_image(tmp_path / "o.jpg", Preprocessing((16, 8), 1)).astype(int)
    assert out[0, :8].mean() > 200 and out[0, 8:].mean() < 50  # the white half is now on top


def test_extensions_are_case_insensitive() -> None:
    assert all(is_image_file(n) for n in ["a.JPG", "a.jpeg", "a.Png", "a.bmp", "a.TIF", "a.tiff"])
    assert not any(is_image_file(n) for n in ["a.txt", "a.npy", "png", "a.gz"])
    assert all(is_image_file(n) for n in ["a.dcm", "a.DICOM", "a.nii", "a.nii.gz"])  # medical formats


def test_zero_byte_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png: the image file is empty \(0 bytes\)") as info:
        decode_image(path, GRAY16)
    assert info.value.path == path


def test_not_an_image_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is text, not a JPEG")
    with pytest.raises(DataError, match=r"notes\.jpg: not an image PIL can read .*\.jpg"):
        decode_image(path, GRAY16)


def test_corrupt_and_truncated_files_are_clear_errors(tmp_path: Path, img) -> None:
    good = img.write(tmp_path / "good.png", img.gradient(64, 64)).read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cut\.png: the image cannot be decoded .*truncated or corrupt"):
        decode_image(tmp_path / "cut.png", GRAY16)
    (tmp_path / "noise.png").write_bytes(good[:16] + bytes(range(256)) * 4)
    with pytest.raises(DataError, match=r"noise\.png: .*(corrupt|cannot be decoded)"):
        decode_image(tmp_path / "noise.png", GRAY16)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"gone\.png: the image file does not exist"):
        decode_image(tmp_path / "gone.png", GRAY16)


def test_resize_array_same_size_is_a_copy(img) -> None:
    arr = np.stack([img.gradient(seed=s) for s in range(3)])
    out = resize_array(arr, GRAY16)
    assert out.shape == (3, 1, 16, 16) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, 0], arr)
    assert not np.shares_memory(out, arr)


def test_resize_array_resizes_like_a_decoded_file(img) -> None:
    arr = np.stack([img.gradient(28, 28, seed=s) for s in range(2)])
    out = resize_array(arr, Preprocessing((16, 16), 1, "pad"))
    expected = np.asarray(fit_to_size(Image.fromarray(arr[1]), Preprocessing((16, 16), 1, "pad")))
    assert out.shape == (2, 1, 16, 16)
    np.testing.assert_array_equal(out[1, 0], expected)


def test_resize_array_converts_channels(img) -> None:
    rgb = np.stack([img.gradient(channels=3, seed=s) for s in range(2)])
    np.testing.assert_array_equal(resize_array(rgb, GRAY16)[1, 0], luminance(rgb[1]))
    gray = resize_array(rgb[..., :1], RGB16)
    assert gray.shape == (2, 3, 16, 16)
    np.testing.assert_array_equal(gray[:, 2], rgb[..., 0])


def test_resize_array_rescales_wide_dtypes_and_rejects_bad_shapes(img) -> None:
    wide = np.stack([img.gradient().astype(np.uint16) * 100 + 7])
    out = resize_array(wide, GRAY16)
    assert out.min() == 0 and out.max() == 255
    with pytest.raises(DataError, match=r"got shape \(16, 16\)"):
        resize_array(img.gradient(), GRAY16)


def test_a_postscript_file_named_png_never_reaches_ghostscript(tmp_path: Path, monkeypatch) -> None:
    from PIL import EpsImagePlugin

    path = tmp_path / "scan.png"
    Image.new("L", (8, 8), 128).save(path, format="EPS")
    with Image.open(path) as unrestricted:  # PIL alone picks its EPS plugin, whose load() runs Ghostscript
        assert unrestricted.format == "EPS"
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load", lambda self: pytest.fail("the EPS plugin ran"))
    with pytest.raises(DataError, match=r"scan\.png: not an image PIL can read"):
        decode_image(path, GRAY16)
