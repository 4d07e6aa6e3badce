import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclf.errors import RunFolderError
from medclf.inference import explain_images
from medclf.inference.explain import MIN_SIDE, explanation_png, safe_png_names


def test_png_names_keep_no_folder_and_never_collide():
    names = safe_png_names([Path("../../etc/passwd"), Path("a/scan 1.dcm"), Path("b/scan 1.png"),
                            Path("B/SCAN 1.png"), Path("/x/.hidden"), Path("ünï/çödé.png"), Path("üü.png")])
    assert names == ["passwd.png", "scan_1.png", "scan_1-2.png", "SCAN_1-3.png", "hidden.png", "d.png", "image.png"]
    assert all("/" not in n and "\\" not in n and not n.startswith(".") for n in names)


def test_the_png_is_the_image_beside_its_overlay_enlarged():
    image = np.zeros((1, 16, 16), np.uint8)
    image[0, 4:8, 4:8] = 255
    cam = np.zeros((16, 16), np.float32)
    cam[4:8, 4:8] = 1
    picture = np.asarray(Image.open(io.BytesIO(explanation_png(image, cam))))
    assert picture.shape == (MIN_SIDE, 2 * MIN_SIDE, 3) and picture.dtype == np.uint8
    scale = MIN_SIDE // 16
    assert (picture[5 * scale, 5 * scale] == 255).all()  # the bright square, grey on the left
    hot = picture[5 * scale, MIN_SIDE + 5 * scale]
    cold = picture[12 * scale, MIN_SIDE + 12 * scale]
    assert hot[0] > hot[2] and cold[2] > cold[0]  # jet: red where the map is high, blue where low


def test_an_output_that_is_a_file_is_refused_before_anything_loads(tmp_path: Path):
    (tmp_path / "out.csv").write_text("x")
    with pytest.raises(RunFolderError, match=r"--out .*out.csv is a file; explain writes a folder"):
        explain_images(tmp_path / "no-run", ["x.png"], out=tmp_path / "out.csv")
