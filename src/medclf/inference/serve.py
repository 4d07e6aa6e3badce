"""Serve a finished run over HTTP: ``POST /predict``, ``GET /health`` and ``GET /`` (a self-contained page).

The fold models are loaded once, when the app is built (:func:`create_app`), and every request reuses them under
one lock (a Grad-CAM attaches hooks to the model, so two requests must not share it at once). Uploads are
bounded twice: by the declared ``Content-Length`` before anything is read, and by counting the bytes as they
arrive (a chunked or lying client). An upload is written to a private temporary file whose name and suffix
medclf chooses, never the client's, and decoded with the model's own preprocessing, so DICOM, 16-bit PNG and
the rest decode exactly as in training. Every client mistake is a 4xx JSON ``{"error": ...}`` saying what is
accepted; anything else is a bug and stays a 500.
"""

from __future__ import annotations

import base64
import contextlib
import io
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse

from medclf import runfolder
from medclf.data import Preprocessing, decode_image
from medclf.data.decode import IMAGE_EXTENSIONS
from medclf.data.formats import DICOM_EXTENSIONS, NIFTI_EXTENSIONS
from medclf.errors import ConfigError, DataError
from medclf.inference.predict import ensemble_proba, fold_models

__all__ = ["DEFAULT_MAX_UPLOAD_MB", "ServedModel", "create_app", "running_server"]

DEFAULT_MAX_UPLOAD_MB = 20.0
FIELD = "file"
# A multipart body is the file plus its boundaries and part headers; this much slack keeps a file of exactly
# the limit acceptable while still refusing a body that cannot hold a file under it.
_MULTIPART_SLACK = 64 * 1024
_CHUNK = 64 * 1024
_ACCEPTED = (f"a multipart/form-data POST with one file in the field '{FIELD}': an image "
             f"({' '.join(e for e in IMAGE_EXTENSIONS if e not in DICOM_EXTENSIONS + NIFTI_EXTENSIONS)}), "
             f"a DICOM file ({' '.join(DICOM_EXTENSIONS)}, or no extension with the DICM marker) or a NIfTI "
             f"volume ({' '.join(NIFTI_EXTENSIONS)})")


class UploadRejected(Exception):
    """A client mistake: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ServedModel:
    """A run's fold models, loaded once, with the decision rule the server applies.

    Attributes:
        run_dir: the run folder.
        loaded: ``[(fold, Classifier), ...]`` from :func:`medclf.inference.fold_models`.
        operating_point: the point name (``"0.5"``, ``"youden"``, ``"sensitivity_0.90"`` ...).
        thresholds: ``{class: threshold}`` at that point (the positive class only for a binary task; every
            class with one for a multi-class or multi-label task; empty when the run has none).
        multilabel: the run is multi-label (summary.json ``task``): every class is decided on its own.
    """

    run_dir: Path
    loaded: list[tuple[int, Any]]
    operating_point: str
    thresholds: dict[str, float]
    multilabel: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def spec(self) -> dict:
        return self.loaded[0][1].spec

    @property
    def class_names(self) -> list[str]:
        return list(self.spec["class_names"])

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.spec["preprocessing"])

    @property
    def positive_class(self) -> str | None:
        """The binary task's positive class (always index 1, :mod:`medclf.data` orders it so); None otherwise."""
        names = self.class_names
        return self.spec.get("positive_class", names[1]) if len(names) == 2 and not self.multilabel else None

    @classmethod
    def load(cls, run_dir: Path, *, fold: int | None = None, operating_point: str | None = None) -> ServedModel:
        """Load and verify the fold models of ``run_dir`` and choose the operating point.

        Raises:
            RunFolderError: the run folder or one of its folds is missing or damaged (named).
            ConfigError: ``operating_point`` is not one the run has thresholds for (the available ones listed).
        """
        run_dir = Path(run_dir)
        loaded = fold_models(run_dir, fold)
        names = list(loaded[0][1].spec["class_names"])
        by_class = runfolder.operating_thresholds(run_dir)
        multilabel = runfolder.read_json(run_dir / runfolder.SUMMARY).get("task") == "multilabel"
        scored = [names[1]] if len(names) == 2 and not multilabel else names
        available = sorted({"0.5"} | {p for c in scored for p in by_class.get(c, {})})
        point = operating_point or ("youden" if "youden" in available else "0.5")
        if point not in available:
            raise ConfigError(f"--operating-point {point!r} is not one {run_dir} has a threshold for; "
                              f"choose one of {', '.join(available)} (thresholds come from the run's "
                              "summary.json, chosen on each fold's validation split)")
        thresholds = {c: (0.5 if point == "0.5" else by_class[c][point])
                      for c in scored if point == "0.5" or point in by_class.get(c, {})}
        return cls(run_dir=run_dir, loaded=loaded, operating_point=point, thresholds=thresholds,
                   multilabel=multilabel)

    def health(self) -> dict:
        """What ``GET /health`` answers: the model, its classes, folds and decision rule."""
        model = self.spec.get("architecture") or self.spec.get("kind")  # a `layers` network has no architecture
        return {"status": "ok", "run": self.run_dir.name, "model": model,
                "classes": self.class_names, "positive_class": self.positive_class,
                "folds": [k for k, _ in self.loaded], "tta": list(self.spec.get("tta") or []),
                "task": "multilabel" if self.multilabel else "binary" if self.positive_class else "multiclass",
                "operating_point": {"name": self.operating_point, "thresholds": self.thresholds},
                "input": {"size": list(self.preprocessing.size_hw), "channels": self.preprocessing.channels}}

    def predict(self, image: np.ndarray, *, explain: bool = False) -> dict:
        """Probabilities, predicted class and decision for one decoded image (C, H, W) uint8."""
        batch = torch.from_numpy(np.array(image[None]))  # a copy: a decoded PIL array is read-only
        with self.lock, torch.inference_mode():
            probs = ensemble_proba(self.loaded, batch, run_dir=self.run_dir)[0]
        names = self.class_names
        predicted = names[int(probs.argmax())]
        if self.multilabel:  # every class over its own threshold, joined as predictions.csv joins them
            predicted = "|".join(c for c, p in zip(names, probs) if p >= self.thresholds.get(c, 0.5))
        out: dict[str, Any] = {"probabilities": {c: float(p) for c, p in zip(names, probs)},
                               "predicted": predicted, "decision": self._decision(probs, predicted)}
        if explain:
            out["overlay_png_base64"] = self._overlay(image, int(probs.argmax()))
            out["explained_class"] = names[int(probs.argmax())]
        return out

    def _decision(self, probs: np.ndarray, predicted: str) -> dict:
        names, point = self.class_names, self.operating_point
        if self.positive_class is not None:
            threshold = self.thresholds[names[1]]
            positive = bool(probs[1] >= threshold)
            return {"operating_point": point, "positive_class": names[1], "threshold": threshold,
                    "positive": positive, "label": names[1] if positive else names[0],
                    "rule": f"P({names[1]}) >= {threshold:.4g}"}
        one_vs_rest = {c: bool(probs[names.index(c)] >= t) for c, t in self.thresholds.items()}
        rule = "each class at or over its threshold" if self.multilabel else "the most probable class"
        return {"operating_point": point, "label": predicted, "rule": rule,
                "one_vs_rest": one_vs_rest, "thresholds": self.thresholds}

    def _overlay(self, image: np.ndarray, target: int) -> str:
        """The Grad-CAM of ``target`` (mean over the fold models) over the image, as a base64 PNG."""
        from medclf.models import cam  # imported here: only an explain request needs grad-cam

        batch = torch.from_numpy(np.array(image[None]))  # a copy: a decoded PIL array is read-only
        with self.lock:
            heat = cam.ensemble_grad_cam([model for _, model in self.loaded], batch, [target])[0]
        picture = cam.overlay(image, heat)
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")


def _upload_suffix(filename: str | None, head: bytes) -> str:
    """The suffix of the private temporary file: one of medclf's own extensions, never the client's string.

    Only the kind matters to the decoder (DICOM, NIfTI, or anything PIL recognises by content); a name with an
    extension medclf does not decode is refused before any decoding.
    """
    name = (filename or "").lower()
    for ext in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):  # ".nii.gz" before ".gz"
        if name.endswith(ext):
            return ext
    if "." in Path(name).name:
        raise UploadRejected(415, f"a file named *{Path(name).suffix[:16]} is not accepted; send {_ACCEPTED}")
    return ".dcm" if head[128:132] == b"DICM" else ".png"  # PIL reads a nameless image by its content


def decode_upload(data: bytes, filename: str | None, prep: Preprocessing) -> np.ndarray:
    """Decode uploaded bytes with ``prep`` via a private temporary file; a client mistake is an UploadRejected."""
    if not data:
        raise UploadRejected(400, f"the uploaded file is empty (0 bytes); send {_ACCEPTED}")
    suffix = _upload_suffix(filename, data[:132])
    with tempfile.TemporaryDirectory(prefix="medclf-serve-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)  # a scratch file in a private folder, deleted below: not a medclf output
        try:
            return decode_image(path, prep)
        except DataError as error:
            reason = str(error).replace(f"{path}: ", "").replace(str(path), "the upload")
            raise UploadRejected(422, f"the upload could not be decoded ({reason}); send {_ACCEPTED}") from None
        except Exception as error:  # noqa: BLE001  (pydicom and nibabel raise their own kinds on a broken file)
            raise UploadRejected(422, f"the upload could not be decoded ({type(error).__name__}); "
                                      f"send {_ACCEPTED}") from None


async def _read_upload(request: Request, max_bytes: int) -> tuple[bytes, str | None, dict[str, str]]:
    """The one uploaded file's bytes, its client name (used only to pick a suffix) and the form's other fields."""
    limit_text = f"{max_bytes / 1e6:g} MB"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + _MULTIPART_SLACK:
        raise UploadRejected(413, f"the upload is {int(declared) / 1e6:.1f} MB; at most {limit_text} is accepted")
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise UploadRejected(415, f"the request is not multipart/form-data; send {_ACCEPTED}")

    async def counted() -> AsyncIterator[bytes]:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes + _MULTIPART_SLACK:  # a chunked or lying client: stop reading now
                raise UploadRejected(413, f"the upload is over {limit_text}; at most {limit_text} is accepted")
            yield chunk

    parser = MultiPartParser(Headers(scope=request.scope), counted(), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise UploadRejected(400, f"the form could not be read ({error}); send {_ACCEPTED}") from None
    try:
        upload = form.get(FIELD)
        if not isinstance(upload, UploadFile):
            present = ", ".join(repr(k) for k in form.keys()) or "none"
            raise UploadRejected(400, f"no file in the field '{FIELD}' (fields sent: {present}); send {_ACCEPTED}")
        data = bytearray()
        while chunk := await upload.read(_CHUNK):
            data += chunk
            if len(data) > max_bytes:
                raise UploadRejected(413, f"the file is over {limit_text}; at most {limit_text} is accepted")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        return bytes(data), upload.filename, fields
    finally:
        await form.close()


def _wants_explain(request: Request, fields: dict[str, str]) -> bool:
    value = request.query_params.get("explain", fields.get("explain", "false"))
    return value.strip().lower() in {"1", "true", "yes", "on"}


def create_app(served: ServedModel, *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> Any:
    """The FastAPI app serving ``served`` (no interactive docs: they load scripts from a CDN)."""
    from fastapi import FastAPI

    max_bytes = int(max_upload_mb * 1_000_000)
    page = (files("medclf") / "resources" / "serve.html").read_text(encoding="utf-8")
    app = FastAPI(title="medclf", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(UploadRejected)
    async def rejected(_: Request, error: UploadRejected) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(ClientDisconnect)
    async def disconnected(_: Request, __: ClientDisconnect) -> JSONResponse:
        return JSONResponse({"error": "the client disconnected before the upload was complete"}, status_code=400)

    @app.get("/health")
    async def health() -> dict:
        return served.health()

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        data, filename, fields = await _read_upload(request, max_bytes)
        explain = _wants_explain(request, fields)

        def work() -> dict:  # decoding and the forward pass leave the event loop free for other requests
            return served.predict(decode_upload(data, filename, served.preprocessing), explain=explain)

        return JSONResponse(await run_in_threadpool(work))

    return app


@contextlib.contextmanager
def running_server(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yields its base URL (``port=0``: a free port).

    The server is stopped and its thread joined on exit, also when the body raises.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="medclf-serve", daemon=True)
    thread.start()
    try:
        while not server.started:  # uvicorn sets it once the socket listens
            if not thread.is_alive():
                raise RuntimeError(f"the server did not start on {host}:{port}")
            threading.Event().wait(0.01)
        bound = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
