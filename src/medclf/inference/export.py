"""Export a finished run to ONNX, with a parity check against torch, and run the export with onnxruntime.

The exported graph takes what :func:`medclf.data.decode_image` produces, an image batch ``(N, C, H, W)`` of
**uint8** pixel values, and returns class probabilities ``(N, K)`` float32: the conversion to [0, 1], the
model's input normalisation, its output activation and its test-time augmentation are all inside, and by default
every fold's model is in the one graph, whose output is the mean of the folds' probabilities (what
``medclf predict`` computes). The batch axis is dynamic.

Beside ``model.onnx`` a sidecar ``export.json`` says how to feed it (input dtype, layout, size, channels, the
Preprocessing dict that decodes a file as in training) and how to read it (classes, positive class, the run's
decision thresholds, TTA, folds), and records the parity check: before anything is written, the run's own test
images (else holdout, else validation; random images when the run's data is gone) go through onnxruntime and
through torch, and the export is refused when any probability differs by more than :data:`PARITY_TOLERANCE`.

The exporter is ``torch.onnx.export(..., dynamo=True)`` (torch.export): the TorchScript exporter also exports
timm's ResNets and EfficientNets here, faster, but is deprecated since torch 2.9.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medclf import __version__, runfolder
from medclf.atomic import atomic_write_bytes
from medclf.config import load_config
from medclf.data import Preprocessing, load_dataset
from medclf.errors import MedclfError, ModelError
from medclf.inference.predict import (
    UnitSettings,
    decision_threshold,
    ensemble_proba,
    fold_models,
    model_tta,
    predict_batch_size,
    unit_settings,
)
from medclf.models import Classifier
from medclf.training import tta_probabilities

__all__ = ["EXPORT_DIR", "ONNX_FILE", "PARITY_TOLERANCE", "SIDECAR", "ExportGraph", "ExportResult", "OnnxModel",
           "Parity", "current_export", "default_export_dir", "export_onnx", "measure_parity", "parity_images",
           "to_onnx"]

EXPORT_DIR = "export"  # RUN_DIR/export/ unless --out says otherwise
ONNX_FILE = "model.onnx"
SIDECAR = "export.json"
INPUT_NAME, OUTPUT_NAME = "image", "probabilities"
PARITY_TOLERANCE = 1e-4  # largest |p_onnx - p_torch| accepted (float32 reordering: ~1e-7 on the tiny models)
PARITY_MAX_IMAGES = 512  # parity is a numerical check: a few hundred images exercise it as well as thousands
PARITY_SPLITS = ("test", "holdout", "val")
_N_SYNTHETIC = 16


def default_export_dir(run_dir: Path) -> Path:
    return Path(run_dir) / EXPORT_DIR


class ExportGraph(nn.Module):
    """uint8 images (N, C, H, W) -> the mean over ``models`` of their (TTA-averaged) probabilities (N, K)."""

    def __init__(self, models: list[Classifier]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)
        self.activations = [m.spec.get("activation", "softmax") for m in models]
        self.ttas = [model_tta(m.spec) for m in models]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float() / 255.0  # as training feeds the model (medclf.training.loop._to_input)
        probs = [tta_probabilities(m, x, activation=a, tta=t)
                 for m, a, t in zip(self.models, self.activations, self.ttas)]
        return torch.stack(probs).mean(dim=0)


def to_onnx(graph: nn.Module, example: torch.Tensor) -> Any:
    """``graph`` as a checked ``onnx.ModelProto`` with a dynamic batch axis, traced on ``example`` (uint8, N >= 2)."""
    import onnx

    graph = graph.cpu().eval()
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        # torch.export's notes on specialised shapes and onnxscript's optimiser chatter say nothing to a user
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(graph, (example.cpu(),), dynamo=True, verbose=False,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes={INPUT_NAME: {0: batch}})
        except Exception as error:  # noqa: BLE001 - torch.export raises many types; all mean "not exportable"
            raise ModelError(f"torch.onnx.export cannot export this model ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''}); predict with the torch engine "
                             "instead.") from error
    proto = program.model_proto
    onnx.checker.check_model(proto, full_check=True)
    return proto


@dataclass(frozen=True)
class Parity:
    """onnxruntime against torch on the same images: the largest probability difference and class agreement."""

    max_abs_diff: float
    agreement: float  # share of images given the same predicted class
    n_images: int
    images: str  # where the images came from
    tolerance: float = PARITY_TOLERANCE

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and measured."""

    model_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]
    parity: Parity


class OnnxModel:
    """An exported model run with onnxruntime (CPU), read with its sidecar."""

    def __init__(self, data: bytes, sidecar: dict[str, Any], *, source: Path | str = ONNX_FILE) -> None:
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own unexported exception types
            raise ModelError(f"{source} cannot be loaded by onnxruntime ({error}); export it again with "
                             "`medclf export RUN_DIR`.") from None
        self.sidecar, self.source = sidecar, source

    @classmethod
    def load(cls, path: Path) -> OnnxModel:
        """The model at ``path`` (``model.onnx``, or the folder holding it), checked against its ``export.json``.

        Raises:
            ModelError: a file is missing, or ``model.onnx`` is not the file its sidecar describes.
        """
        path = Path(path)
        model_path = path / ONNX_FILE if path.is_dir() else path
        sidecar_path = model_path.with_name(SIDECAR)
        fix = "export the run again with `medclf export RUN_DIR` (or pass --model PATH/TO/model.onnx)"
        for needed in (model_path, sidecar_path):
            if not needed.is_file():
                raise ModelError(f"{needed} does not exist; the ONNX engine needs {ONNX_FILE} and {SIDECAR} side by "
                                 f"side: {fix}.")
        sidecar = runfolder.read_json(sidecar_path, fix=fix)
        data = model_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sidecar.get("sha256"):
            raise ModelError(f"{model_path} is not the model {sidecar_path} describes (its SHA-256 differs: "
                             f"replaced, truncated or from another export); {fix}.")
        return cls(data, sidecar, source=model_path)

    @property
    def class_names(self) -> list[str]:
        return list(self.sidecar["class_names"])

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.sidecar["preprocessing"])

    @property
    def units(self) -> UnitSettings:
        return UnitSettings.from_dict(self.sidecar)

    def predict(self, images: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
        """Probabilities (N, K) float64 of uint8 ``images`` (N, C, H, W); ``batch_size`` default:
        :func:`~medclf.inference.predict.predict_batch_size` of their size."""
        batch_size = batch_size or predict_batch_size(images.shape[-2:])
        name = self.session.get_inputs()[0].name
        out = [self.session.run(None, {name: images[i:i + batch_size]})[0] for i in range(0, len(images), batch_size)]
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, len(self.class_names)))


# ---------------------------------------------------------------------------------------------- parity
def parity_images(run_dir: Path, spec: dict[str, Any], *, fold: int | None = None,
                  limit: int = PARITY_MAX_IMAGES) -> tuple[np.ndarray, str]:
    """Images for the parity check: the run's test images (else holdout, else val) of ``fold`` or of every fold.

    The ids come from ``splits.json`` and the images from the run's own data (``config.yaml``, through the decode
    cache). When the data cannot be loaded any more, random images of the model's input shape stand in, and the
    description says so.
    """
    try:
        config = load_config(Path(run_dir) / runfolder.CONFIG)
        splits = runfolder.read_json(Path(run_dir) / runfolder.SPLITS)
        data = load_dataset(config.data)
    except MedclfError as error:
        return _synthetic(spec), f"{_N_SYNTHETIC} random images: the run's data cannot be loaded ({error})"
    folds = [f for f in splits.get("folds", []) if fold is None or f.get("fold") == fold]
    position = {str(i): n for n, i in enumerate(data.ids)}
    for split in PARITY_SPLITS:
        ids = dict.fromkeys(i for f in folds for i in f.get(split, []) if i in position)  # ordered, unique
        if ids:
            idx = [position[i] for i in ids][:limit]
            return data.images[idx], f"{len(idx)} {split} image(s) of the run"
    return _synthetic(spec), f"{_N_SYNTHETIC} random images: splits.json names no image of the run's data"


def _synthetic(spec: dict[str, Any]) -> np.ndarray:
    prep = Preprocessing.from_dict(spec["preprocessing"])
    return np.random.default_rng(0).integers(0, 256, (_N_SYNTHETIC, prep.channels, *prep.size_hw), dtype=np.uint8)


def measure_parity(loaded: list[tuple[int, Classifier]], onnx_model: OnnxModel, images: np.ndarray, *,
                   description: str, batch_size: int | None = None) -> Parity:
    """onnxruntime's probabilities against torch's (:func:`ensemble_proba`, on the CPU like onnxruntime)."""
    reference = ensemble_proba(loaded, torch.from_numpy(images), batch_size=batch_size, device=torch.device("cpu"))
    exported = onnx_model.predict(images, batch_size=batch_size)
    diff = float(np.abs(exported - reference).max()) if len(images) else 0.0
    agreement = float((exported.argmax(1) == reference.argmax(1)).mean()) if len(images) else 1.0
    return Parity(max_abs_diff=diff, agreement=agreement, n_images=len(images), images=description)


# ---------------------------------------------------------------------------------------------- export
def export_onnx(run_dir: Path, *, fold: int | None = None, out: Path | None = None,
                batch_size: int | None = None) -> ExportResult:
    """Export the fold ensemble of ``run_dir`` (or fold ``fold``) to ``out/model.onnx`` + ``out/export.json``.

    Args:
        run_dir: a run folder written by ``medclf run``.
        fold: export only this fold's model; default: every fold in one graph.
        out: the folder to write; default ``RUN_DIR/export``.
        batch_size: images per forward pass of the parity check (default: as ``medclf predict``).

    Raises:
        RunFolderError: a fold is incomplete or damaged (as for ``medclf predict``).
        ModelError: the model cannot be exported, or the parity check fails (nothing is written then).
    """
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else default_export_dir(run_dir)
    loaded = fold_models(run_dir, fold)
    spec = loaded[0][1].spec
    images, description = parity_images(run_dir, spec, fold=fold)
    example = images[:2] if len(images) >= 2 else _synthetic(spec)[:2]  # a batch of 2: 1 would be specialised
    proto = to_onnx(ExportGraph([m for _, m in loaded]), torch.from_numpy(np.ascontiguousarray(example)))
    data = proto.SerializeToString()
    sidecar = _sidecar(run_dir, spec, folds=[k for k, _ in loaded], opset=_opset(proto), data=data)
    sidecar["decision_threshold"] = decision_threshold([m.spec for _, m in loaded])  # predict --engine onnx
    sidecar["weights_sha256"] = _weights_sha256(run_dir, [k for k, _ in loaded])  # what --engine auto checks
    parity = measure_parity(loaded, OnnxModel(data, sidecar), images, description=description,
                            batch_size=batch_size)
    if not parity.passed:
        raise ModelError(f"the ONNX export of {run_dir} does not reproduce torch: the largest probability difference "
                         f"is {parity.max_abs_diff:.3g} (> {PARITY_TOLERANCE:g}) on {description}, predicted classes "
                         f"agree on {parity.agreement:.1%}; nothing was written. Predict with the torch engine.")
    sidecar["parity"] = asdict(parity)
    model_path, sidecar_path = out / ONNX_FILE, out / SIDECAR
    out.mkdir(parents=True, exist_ok=True)
    # the sidecar goes first and returns last, so a model.onnx left alone by a crash is never read with
    # another export's sidecar (OnnxModel.load also checks the SHA-256)
    sidecar_path.unlink(missing_ok=True)
    atomic_write_bytes(model_path, data)
    runfolder.write_json(sidecar_path, sidecar)
    return ExportResult(model_path=model_path, sidecar_path=sidecar_path, sidecar=sidecar, parity=parity)


def _weights_sha256(run_dir: Path, folds: list[int]) -> dict[str, str]:
    """SHA-256 of each fold's ``model.safetensors``, by fold number, as its ``complete.json`` records it (what
    ``runfolder.check_fold`` verifies the file against): the weights an export was made from, read without
    hashing the weights again."""
    return {str(k): runfolder.read_json(runfolder.fold_dir(run_dir, k) / runfolder.COMPLETE)["files"][
        runfolder.WEIGHTS]["sha256"] for k in folds}


def current_export(run_dir: Path) -> Path | None:
    """``RUN_DIR/export`` when it holds an export of the run's whole fold ensemble as the run stands now: its
    sidecar's ``weights_sha256`` names every fold with weights and matches each one (an export from before a
    retrain, of one fold, or written before medclf recorded the weights, is not current); None otherwise.

    The ONNX engine still checks ``model.onnx`` against the sidecar (:meth:`OnnxModel.load`) and the fold weights
    are verified by the torch engine, so this only decides which engine ``medclf predict`` takes by default.
    """
    folder = default_export_dir(run_dir)
    try:
        sidecar = json.loads((folder / SIDECAR).read_text())
        recorded = sidecar["weights_sha256"]
        present = runfolder.fold_indices(run_dir)
        if not (folder / ONNX_FILE).is_file() or not present or set(recorded) != {str(k) for k in present}:
            return None
        return folder if _weights_sha256(run_dir, present) == recorded else None
    except (OSError, ValueError, KeyError, TypeError, MedclfError):  # no export, an unreadable file: torch
        return None


def _opset(proto: Any) -> int:
    return int(next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")))


def _sidecar(run_dir: Path, spec: dict[str, Any], *, folds: list[int], opset: int, data: bytes) -> dict[str, Any]:
    """What a user of ``model.onnx`` needs to feed it and read it (the parity figures are added once measured)."""
    import onnx
    import onnxruntime

    prep = Preprocessing.from_dict(spec["preprocessing"])
    names = list(spec["class_names"])
    positive = spec.get("positive_class")
    if positive is None and len(names) == 2 and spec.get("activation") != "sigmoid":
        positive = names[1]  # runs written before model.json had it: the second class, as they were scored
    has_summary = (run_dir / runfolder.SUMMARY).is_file()
    return {
        "format": "onnx",
        "model_file": ONNX_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "run_dir": str(run_dir.resolve()),
        "folds": folds,
        "ensemble": "mean of the folds' probabilities" if len(folds) > 1 else "a single fold",
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NCHW",
                  "shape": ["batch", prep.channels, *prep.size_hw], "channels": prep.channels,
                  "size_hw": list(prep.size_hw), "value_range": [0, 255],
                  "note": "pixel values as medclf.data.decode_image gives them; scaling, normalisation, "
                          "activation and TTA happen inside the graph"},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", len(names)],
                   "activation": spec.get("activation", "softmax")},
        "class_names": names,
        "positive_class": positive,
        "preprocessing": spec["preprocessing"],
        "thresholds": runfolder.operating_thresholds(run_dir) if has_summary else {},
        "tta": model_tta(spec),
        **unit_settings(run_dir).to_dict(),
        "opset": opset,
        "exporter": "torch.onnx.export(dynamo=True)",
        "versions": {"medclf": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
    }
