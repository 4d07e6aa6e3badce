"""`medclf serve`: the real uvicorn server on 127.0.0.1 (a free port), driven by an httpx client, on the session's
tiny binary and three-class runs. Every server a test starts is stopped when it ends."""

from __future__ import annotations

import base64
import io
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from dicom_files import random_pixels, write_dicom
from medclf.data import decode_image
from medclf.errors import ConfigError
from medclf.inference import predict_images
from medclf.inference.serve import ServedModel, create_app, running_server


@pytest.fixture(scope="module")
def binary_model(binary_run: Path) -> ServedModel:
    return ServedModel.load(binary_run)


@pytest.fixture(scope="module")
def binary_url(binary_model: ServedModel):
    with running_server(create_app(binary_model)) as url:
        yield url


@pytest.fixture()
def client(binary_url: str):
    with httpx.Client(base_url=binary_url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def png(binary_splits: Path) -> Path:
    return sorted((binary_splits / "test" / "abnormal").glob("*.png"))[0]


def _post(client: httpx.Client, name: str, data: bytes, *, field: str = "file", params: dict | None = None,
          content_type: str = "application/octet-stream") -> httpx.Response:
    return client.post("/predict", files={field: (name, data, content_type)}, params=params)


def test_health_describes_the_model_and_its_decision_rule(client: httpx.Client, binary_model: ServedModel):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["model"] == "test_resnet"
    assert sorted(body["classes"]) == ["abnormal", "normal"]
    assert body["positive_class"] == body["classes"][1]
    assert body["folds"] == [0, 1]
    assert body["input"] == {"size": [16, 16], "channels": 1}
    point = body["operating_point"]
    assert point["name"] in ("youden", "0.5")
    assert set(point["thresholds"]) == {body["classes"][1]}


def test_predict_a_png_matches_medclf_predict(client: httpx.Client, binary_run: Path, png: Path):
    response = _post(client, png.name, png.read_bytes(), content_type="image/png")
    assert response.status_code == 200, response.text
    body = response.json()
    (expected,) = predict_images(binary_run, [png])
    probs = body["probabilities"]
    assert probs == pytest.approx({c: expected[f"prob_{c}"] for c in probs}, abs=1e-6)
    assert body["predicted"] == expected["predicted"] == max(probs, key=probs.get)
    decision = body["decision"]
    positive = decision["positive_class"]
    assert decision["positive"] == (probs[positive] >= decision["threshold"])
    assert decision["label"] == (positive if decision["positive"] else next(c for c in probs if c != positive))
    assert "overlay_png_base64" not in body


@pytest.mark.parametrize("name", ["scan.dcm", "IM0001"])
def test_predict_a_dicom_upload(client: httpx.Client, tmp_path: Path, name: str):
    path = write_dicom(tmp_path / name, random_pixels(3))
    response = _post(client, name, path.read_bytes(), content_type="application/dicom")
    assert response.status_code == 200, response.text
    assert sum(response.json()["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("how", ["query", "form"])
def test_explain_adds_a_grad_cam_overlay_png(client: httpx.Client, png: Path, how: str):
    if how == "query":
        response = _post(client, png.name, png.read_bytes(), params={"explain": "true"})
    else:
        response = client.post("/predict", files={"file": (png.name, png.read_bytes())}, data={"explain": "1"})
    assert response.status_code == 200, response.text
    body = response.json()
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png_base64"])))
    assert overlay.format == "PNG" and overlay.size == (16, 16) and overlay.mode == "RGB"
    assert np.asarray(overlay).std() > 0
    assert body["explained_class"] == body["predicted"]


def _truncated_png(png: Path) -> bytes:
    data = png.read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("name", "data", "field", "status", "says"),
    [
        ("notes.txt", b"not an image", "file", 415, r"\*\.txt is not accepted"),
        ("notes.png", b"not an image at all, just text", "file", 422, "could not be decoded"),
        ("half.png", "TRUNCATED", "file", 422, "could not be decoded"),
        ("empty.png", b"", "file", 400, "empty"),
        ("scan.png", "PNG", "image", 400, "no file in the field 'file'"),
        ("broken.dcm", b"\0" * 128 + b"DICM" + b"\x02\x00", "file", 422, "could not be decoded"),
    ],
)
def test_malformed_uploads_get_a_4xx_json_error_saying_what_is_accepted(
    client: httpx.Client, png: Path, name: str, data, field: str, status: int, says: str
):
    data = {"TRUNCATED": _truncated_png(png), "PNG": png.read_bytes()}.get(data, data)
    response = _post(client, name, data, field=field)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert re.search(says, error)
    assert "multipart/form-data" in error and ".dcm" in error and ".png" in error
    assert "/tmp" not in error and "Traceback" not in error  # the private temporary file is not named


def test_a_request_that_is_not_multipart_is_refused(client: httpx.Client):
    response = client.post("/predict", json={"image": "x"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["error"]


def test_a_path_in_the_upload_name_reaches_no_file(client: httpx.Client, png: Path, tmp_path: Path):
    target = tmp_path / "evil.png"
    name = "../" * 12 + str(target).lstrip("/")
    response = _post(client, name, png.read_bytes())
    assert response.status_code == 200, response.text
    response = _post(client, "../" * 12 + str(tmp_path / "evil").lstrip("/"), b"junk")
    assert response.status_code == 422
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def small_limit_url(binary_model: ServedModel):
    """The same loaded model served with a 10 kB upload limit (the model is not loaded again)."""
    with running_server(create_app(binary_model, max_upload_mb=0.01)) as url:
        yield url


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "medclfboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_oversized_uploads_are_refused_by_length_and_by_count(small_limit_url: str, png: Path):
    with httpx.Client(base_url=small_limit_url, timeout=60) as c:
        assert _post(c, png.name, png.read_bytes()).status_code == 200  # a small PNG is under 10 kB
        big = c.post("/predict", files={"file": ("big.png", b"\0" * 200_000)})  # declared Content-Length
        assert big.status_code == 413 and "at most 0.01 MB" in big.json()["error"]
        within_slack = _post(c, "big.png", b"\0" * 20_000)  # the body is under the slack, the file is not
        assert within_slack.status_code == 413 and "the file is over" in within_slack.json()["error"]
        body, content_type = _multipart(b"\0" * 300_000)
        chunked = c.post("/predict", content=iter([body[i:i + 8192] for i in range(0, len(body), 8192)]),
                         headers={"content-type": content_type})  # no Content-Length: counted as it arrives
        assert "content-length" not in chunked.request.headers
        assert chunked.status_code == 413 and "the upload is over" in chunked.json()["error"]
        assert c.get("/health").status_code == 200  # and the server is still there


def test_concurrent_requests_give_the_same_answer(client: httpx.Client, png: Path):
    data = png.read_bytes()
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: _post(client, png.name, data).json(), range(16)))
    assert all(b["probabilities"] == bodies[0]["probabilities"] for b in bodies)


def test_the_page_is_self_contained(client: httpx.Client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file"' in page.text and "/predict" in page.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)  # nothing from another host
    assert client.get("/docs").status_code == 404  # FastAPI's docs pull scripts from a CDN: switched off


def test_multi_class_decision_is_the_most_probable_class(trained_run: Path, tiny_splits: Path):
    served = ServedModel.load(trained_run, fold=1)
    image = sorted((tiny_splits / "test" / "square").glob("*.png"))[0]
    with running_server(create_app(served)) as url, httpx.Client(base_url=url, timeout=60) as c:
        body = _post(c, image.name, image.read_bytes(), params={"explain": "true"}).json()
        assert c.get("/health").json()["folds"] == [1]
    assert sorted(body["probabilities"]) == ["blank", "circle", "square"]
    assert body["decision"]["label"] == body["predicted"]
    assert set(body["decision"]["one_vs_rest"]) <= {"blank", "circle", "square"}
    assert base64.b64decode(body["overlay_png_base64"]).startswith(b"\x89PNG")


def test_a_multi_label_model_decides_each_class_on_its_own(binary_model: ServedModel, binary_splits: Path):
    # the binary run's models stand in for a multi-label run's: only the decision rule differs
    served = ServedModel(run_dir=binary_model.run_dir, loaded=binary_model.loaded, operating_point="0.5",
                         thresholds={"abnormal": 0.0, "normal": 1.01}, multilabel=True)
    image = decode_image(sorted((binary_splits / "test" / "normal").glob("*.png"))[0], served.preprocessing)
    body = served.predict(image)
    assert body["predicted"] == "abnormal"  # over its threshold of 0 whatever its probability; normal never
    assert body["decision"]["one_vs_rest"] == {"abnormal": True, "normal": False}
    assert served.positive_class is None and served.health()["task"] == "multilabel"
    served.thresholds = {"abnormal": 0.0, "normal": 0.0}
    assert served.predict(image)["predicted"] == "abnormal|normal"


def test_an_operating_point_the_run_lacks_is_an_error_listing_those_it_has(binary_run: Path):
    with pytest.raises(ConfigError, match=r"--operating-point 'sensitivity_0.99' .* choose one of .*0\.5"):
        ServedModel.load(binary_run, operating_point="sensitivity_0.99")
    assert ServedModel.load(binary_run, operating_point="0.5").thresholds.popitem()[1] == 0.5


def test_the_cli_serves_until_interrupted(binary_run: Path, png: Path, cli):
    server = cli.start("serve", binary_run, "--port", "0")  # its own process, forked from the warm server
    try:
        url, deadline = None, time.monotonic() + 120
        while url is None and time.monotonic() < deadline:  # uvicorn names the port it bound once it listens
            text = server.stderr.read_text() if server.stderr.exists() else ""  # the child opens it
            found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", text)
            url = found[1] if found else time.sleep(0.1)
        assert url, server.stderr.read_text() if server.stderr.exists() else "no output"
        with httpx.Client(base_url=url, timeout=60) as c:
            assert c.get("/health").json()["status"] == "ok"
            assert _post(c, png.name, png.read_bytes()).status_code == 200
    finally:
        os.kill(server.pid, signal.SIGINT)
        done = server.wait(timeout=60)
    assert done.returncode == 0, done
    assert f"serving {binary_run}" in " ".join(done.stdout.split())


@pytest.mark.parametrize(
    ("args", "says"),
    [(["{missing}"], "does not exist"), (["{run}", "--operating-point", "best"], "choose one of"),
     (["{run}", "--max-upload-mb", "0"], "--max-upload-mb must be a positive"), (["{run}", "--port", "70000"],
                                                                                 "--port must be between")],
)
def test_the_cli_refuses_in_one_paragraph(binary_run: Path, tmp_path: Path, args: list[str], says: str):
    from typer.testing import CliRunner

    from medclf.cli import app

    args = [a.format(missing=tmp_path / "nope", run=binary_run) for a in args]
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 2
    assert says in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
