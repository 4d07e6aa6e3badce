"""The configuration schema: the one description of what a user may write in a study's YAML.

It is validated once, when loaded (:func:`load_config`), and passed inward as typed sections. Unknown keys are
errors with the closest valid key suggested; relative paths are resolved against the config file's folder.
Every key is documented in ``docs/config.md`` (a test keeps the two in step).

This package imports nothing of medclf above it (nor torch, timm or Pillow): the checks that need a component
registry (timm architectures, losses, optimizers, schedulers, augmentations, layer activations, monitored
metrics) run once at the boundary, :func:`medclf.experiments.validation.check_config`, which every command and
the Python API call right after loading and before any data is read.
"""

from medclf.config.data import (
    CsvSource,
    DataConfig,
    FolderSource,
    FoldsSource,
    IntensityConfig,
    NpzSource,
    PatientsSource,
    SplitsSource,
    SyntheticSource,
    VolumeConfig,
)
from medclf.config.loading import (
    RUNTIME_ONLY_KEYS,
    apply_overrides,
    config_fingerprint,
    dump_config,
    load_config,
    parse_config,
    read_yaml,
    schema_keys,
)
from medclf.config.model import LAYER_TYPES, HeadConfig, ModelConfig
from medclf.config.study import AuditConfig, Config, CVConfig, EvaluationConfig
from medclf.config.tracking import TrackingConfig
from medclf.config.training import (
    RECIPES,
    AugmentationConfig,
    EarlyStoppingConfig,
    EmaConfig,
    FreezeLastN,
    LossConfig,
    MixupConfig,
    OptimizerConfig,
    ProgressiveResizeConfig,
    SchedulerConfig,
    StageConfig,
    TrainingConfig,
)

__all__ = [
    "RUNTIME_ONLY_KEYS",
    "apply_overrides",
    "AuditConfig",
    "AugmentationConfig",
    "EarlyStoppingConfig",
    "EmaConfig",
    "FreezeLastN",
    "HeadConfig",
    "LAYER_TYPES",
    "StageConfig",
    "CVConfig",
    "Config",
    "CsvSource",
    "DataConfig",
    "EvaluationConfig",
    "FolderSource",
    "FoldsSource",
    "IntensityConfig",
    "LossConfig",
    "MixupConfig",
    "ModelConfig",
    "NpzSource",
    "OptimizerConfig",
    "PatientsSource",
    "ProgressiveResizeConfig",
    "RECIPES",
    "SchedulerConfig",
    "SplitsSource",
    "SyntheticSource",
    "TrackingConfig",
    "TrainingConfig",
    "VolumeConfig",
    "config_fingerprint",
    "dump_config",
    "load_config",
    "parse_config",
    "read_yaml",
    "schema_keys",
]

