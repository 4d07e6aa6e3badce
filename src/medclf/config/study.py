"""The top level: the whole study's config, with cross-validation, evaluation and audit sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from medclf.config._base import _Section
from medclf.config.data import DataConfig
from medclf.config.model import ModelConfig
from medclf.config.tracking import TrackingConfig
from medclf.config.training import TrainingConfig


# ------------------------------------------------------------------------------------------ cross-validation
class CVConfig(_Section):
    mode: Literal["kfold", "holdout"] = "kfold"  # holdout: use the data's own train/val/test splits
    n_folds: int = Field(5, ge=2)
    val_fraction: float = Field(0.2, gt=0, lt=1)  # inner validation carved from each training fold
    test_fraction: float = Field(0.0, ge=0, lt=1)  # carve a test split when the data has none
    pool: list[Literal["train", "val"]] = ["train"]  # the splits whose images are cross-validated
    grouped: bool = True  # keep every image of a patient on one side of every split (when ids exist)
    # which folds to run (null: all); a runtime key, so running the rest later into the same folder resumes
    folds: list[int] | None = None
    # move whole patients so that none spans the data's given train/val/test splits (a clean test stays as given)
    resplit_by_patient: bool = False

    @field_validator("folds", mode="before")
    @classmethod
    def _fold_list(cls, v: object, info: ValidationInfo) -> object:
        """``--folds 0,3`` arrives as the text "0,3" (and ``--folds 3`` as the number 3): both mean [0, 3] / [3]."""
        if isinstance(v, str):
            parts = [p.strip() for p in v.strip().strip("[]").split(",")]
            if not all(p.isdigit() for p in parts):
                raise ValueError(f"takes fold indices separated by commas, such as 0,3 or [0, 3]; "
                                 f"{_valid_folds(info)} (got {v!r})")
            return [int(p) for p in parts]
        if isinstance(v, list) and any(isinstance(k, bool) for k in v):
            raise ValueError(f"takes fold indices, not true/false; {_valid_folds(info)} (got {v!r})")
        return [v] if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("folds")
    @classmethod
    def _distinct_indices(cls, v: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if v is None:
            return None
        if not v or any(k < 0 for k in v):
            raise ValueError(f"lists fold indices, or is null for every fold; {_valid_folds(info)} (got {v})")
        return sorted(set(v))


def _valid_folds(info: ValidationInfo) -> str:
    """Which indices cv.folds accepts, as far as the config knows (predefined folds are counted on the data)."""
    n = info.data.get("n_folds")
    kfold = f"folds are numbered from 0: 0 to {n - 1} with cv.n_folds: {n}" if n else "folds are numbered from 0"
    return f"{kfold} (predefined folds: 0 to their number - 1; holdout: 0)"


class OperatingPointsConfig(_Section):
    """Decision thresholds read as a clinician reads a test: chosen on validation, applied unchanged elsewhere."""

    # thresholds reaching at least these sensitivities on the validation split (besides 0.5 and Youden's J)
    sensitivity: list[float] = [0.90, 0.95]
    n_bootstrap: int = Field(1000, ge=100)  # resamples of each 95 % interval
    confidence: float = Field(0.95, gt=0, lt=1)

    @field_validator("sensitivity")
    @classmethod
    def _rates(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not 0 < x <= 1]
        if bad:
            raise ValueError(f"sensitivity targets must lie in (0, 1], got {bad}")
        return sorted(set(v))


class EvaluationConfig(_Section):
    """How predictions are scored beyond the image level."""

    patient_aggregation: Literal["mean", "vote"] = "mean"  # how image probabilities become a patient's (study's)
    # decision threshold: multi-label, of each label (tuned: max F1 per label on val); two classes, of the positive
    # class (tuned: Youden's J on val); the headline accuracy, F1 and confusion matrices are read at it
    threshold: Literal["tuned"] | float = 0.5
    operating_points: OperatingPointsConfig = OperatingPointsConfig()
    # test-time augmentation: predictions averaged over the identity and these flips (evaluation, predict, export)
    tta: list[Literal["hflip", "vflip"]] = []
    # a linear probe on the fold's frozen pretrained features, scored beside the model with a paired test; auto:
    # when model.pretrained is set and no training stage is itself a probe (it costs one feature pass per study)
    baseline: Literal["auto", "linear_probe", "none"] = "auto"

    @field_validator("threshold")
    @classmethod
    def _in_unit_interval(cls, v: str | float) -> str | float:
        if not isinstance(v, str) and not 0 < v < 1:
            raise ValueError(f"threshold must be 'tuned' or a number between 0 and 1, got {v}")
        return v


class AuditConfig(_Section):
    """The leakage audit run before every study (``RUN_DIR/audit.json``)."""

    leakage: Literal["warn", "fail", "drop_duplicates"] = "warn"
    # Defaults measured by benchmarks/near_duplicates.py (docs/benchmarks.md): no false pair on its two sets.
    near_distance: int = Field(10, ge=0, le=64)  # near duplicates: perceptual hashes at most this many bits apart
    near_correlation: float = Field(0.9925, ge=-1, le=1)  # ...and 32x32 thumbnails at least this correlated
    near_duplicates: bool = True  # false: only exact duplicates and patient overlap are audited


class Config(_Section):
    name: str = "study"
    seed: int = 0
    data: DataConfig
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    cv: CVConfig = CVConfig()
    audit: AuditConfig = AuditConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tracking: TrackingConfig = TrackingConfig()  # runtime only: not in the config fingerprint

