import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medclf.config import (
    RECIPES,
    Config,
    apply_overrides,
    config_fingerprint,
    dump_config,
    load_config,
    parse_config,
)
from medclf.errors import ConfigError
from medclf.experiments.validation import parse_checked_config

MINIMAL = {"data": {"source": {"type": "npz", "path": "data.npz"}}}


def test_defaults_are_the_finetune_recipe():
    cfg = parse_config(MINIMAL)
    assert cfg.training.optimizer.name == "adamw"
    assert cfg.training.optimizer.lr == 1e-3 and cfg.training.optimizer.weight_decay == 1e-4
    assert cfg.training.scheduler.name == "onecycle"
    assert cfg.training.loss.label_smoothing == 0.1
    assert cfg.training.augmentation.presets == ["hflip"]


def test_recipe_is_one_line_and_explicit_keys_win():
    cfg = parse_config(MINIMAL | {"training": {"recipe": "sgd", "optimizer": {"lr": 0.01}}})
    assert cfg.training.optimizer.name == "sgd"
    assert cfg.training.optimizer.lr == 0.01
    assert cfg.training.scheduler.name == "none"
    assert cfg.training.augmentation.presets == []
    assert set(RECIPES) >= {"finetune", "sgd", "adam"}


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"training\.epoch: unknown key\. Did you mean 'training\.epochs'\?"):
        parse_config(MINIMAL | {"training": {"epoch": 3}})


def test_unknown_key_inside_a_source_variant():
    with pytest.raises(ConfigError, match=r"Did you mean 'data\.source\.path'\?"):
        parse_config({"data": {"source": {"type": "folder", "path": "x", "pth": "y"}}})


def test_bad_values_name_field_and_value():
    with pytest.raises(ConfigError, match=r"model\.name: 'resnet19' is not a timm architecture\. Did you mean 'resnet18'"):
        parse_checked_config(MINIMAL | {"model": {"name": "resnet19"}})
    with pytest.raises(ConfigError, match=r"training\.optimizer\.name: Unknown optimizer 'adamm'.*adam, adamw, rmsprop, sgd"):
        parse_checked_config(MINIMAL | {"training": {"optimizer": {"name": "adamm"}}})
    with pytest.raises(ConfigError, match=r"training\.monitor: cannot monitor 'val_acc'\. Did you mean 'val_accuracy'"):
        parse_checked_config(MINIMAL | {"training": {"monitor": "val_acc"}})
    with pytest.raises(ConfigError, match=r"cv\.n_folds"):
        parse_config(MINIMAL | {"cv": {"n_folds": 1}})
    with pytest.raises(ConfigError, match=r"unknown recipe 'fintune'\. Did you mean 'finetune'"):
        parse_config(MINIMAL | {"training": {"recipe": "fintune"}})


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "study.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    cfg = load_config(path)
    assert cfg.data.source.path == tmp_path / "sub" / "data.npz"


def test_overrides_are_parsed_as_yaml(tmp_path: Path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    cfg = load_config(path, ["training.epochs=3", "model.pretrained=true", "training.optimizer.name=sgd",
                             "data.image_size=[32, 48]"])
    assert cfg.training.epochs == 3
    assert cfg.model.pretrained is True
    assert cfg.training.optimizer.name == "sgd"
    assert cfg.data.size_hw == (32, 48)
    with pytest.raises(ConfigError, match="not of the form dotted.key=value"):
        apply_overrides({}, ["training.epochs"])


def test_missing_file_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_dump_round_trips_and_fingerprint_tracks_content(tmp_path: Path):
    cfg = parse_config(MINIMAL, base_dir=tmp_path)
    again = parse_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
    assert config_fingerprint(again) == config_fingerprint(cfg)
    changed = parse_config(MINIMAL | {"seed": 1}, base_dir=tmp_path)
    assert config_fingerprint(changed) != config_fingerprint(cfg)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"checkpoint_path": "/tmp/evil.pth"}, r"model\.kwargs: checkpoint_path is not accepted: it makes timm open and unpickle that file"),
    ({"pretrained": True}, r"pretrained is not accepted: it makes timm download"),
    ({"pretrained_cfg_overlay": {"file": "w.pth"}}, r"pretrained_cfg_overlay is not accepted.*pretrained_cfg_overlay\.file is not accepted"),
    ({"cache_dir": "/tmp"}, r"cache_dir is not accepted"),
    ({"hf_hub_revision": "main"}, r"hf_hub_revision is not accepted: it is named like a timm argument that loads"),
    ({"weights_path": "w.pth"}, r"weights_path is not accepted"),
    ({"in_chans": 3}, r"in_chans is not accepted: it is set by medclf from data\.channels"),
    ({"drop_rate": 0.2}, r"drop_rate is not accepted: it has its own key, model\.drop_rate"),
    ({"features_only": True}, r"features_only is not accepted: it turns the network into a feature extractor"),
])
def test_model_kwargs_refuse_loader_and_medclf_keys(kwargs, message):
    with pytest.raises(ConfigError, match=message + r".*weights come only from model\.pretrained"):
        parse_config(MINIMAL | {"model": {"name": "test_resnet", "kwargs": kwargs}})


def test_model_kwargs_keep_architecture_arguments_that_look_like_loader_keys():
    kwargs = {"output_stride": 8, "drop_path": 0.1, "use_checkpoint": False, "pretrained_window_sizes": [0, 0, 0, 0],
              "bidirectional": True, "state_dim": 4}
    assert parse_config(MINIMAL | {"model": {"name": "test_resnet", "kwargs": kwargs}}).model.kwargs == kwargs


def test_importing_the_config_imports_nothing_above_it():
    code = ("import sys, medclf.config; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm', 'PIL', 'torchvision'})); "
            "print(sorted(m for m in sys.modules if m.startswith('medclf.') and m.split('.')[1] not in "
            "('config', 'errors', 'registry')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "[]"]


def test_registered_names_are_checked_at_the_boundary_with_the_parse_wording():
    layers = [{"type": "conv", "filters": 4}, {"type": "residual", "layers": [{"type": "conv", "filters": 4,
                                                                              "activation": "rellu"}]}]
    raw = MINIMAL | {"model": {"name": "layers", "layers": layers}}
    assert parse_config(raw).model.layers[1].layers[0].activation == "rellu"  # parsing alone is pure pydantic
    with pytest.raises(ConfigError, match=r"^config is not a valid medclf config: model\.layers\.1\.layers\.0\."
                                          r"activation: Unknown activation 'rellu'\. Did you mean 'relu'\?"):
        parse_checked_config(raw)
    with pytest.raises(ConfigError, match=r"training\.stages\.0\.scheduler\.name: Unknown scheduler 'cosin'.*"
                                          r"training\.stages\.1\.scheduler\.name: Unknown scheduler 'cosin'"):
        parse_checked_config(MINIMAL | {"training": {"scheduler": {"name": "cosin"},
                                                     "stages": [{"epochs": 1}, {"epochs": 2}]}})
    with pytest.raises(ConfigError, match=r"training\.loss: loss 'cross_entropy' does not read gamma \(gamma is read "
                                          r"by focal\)\. Remove it or choose a loss that uses it"):
        parse_checked_config(MINIMAL | {"training": {"loss": {"gamma": 1.0}}})
    with pytest.raises(ConfigError, match=r"training\.augmentation: Unknown augmentation preset 'hflp'"):
        parse_checked_config(MINIMAL | {"training": {"augmentation": {"presets": ["hflp"]}}})
    with pytest.raises(ConfigError, match=r"training\.early_stopping\.monitor: cannot monitor 'val_acc'"):
        parse_checked_config(MINIMAL | {"training": {"early_stopping": {"monitor": "val_acc", "patience": 2}}})


def test_load_checked_config_names_the_file_and_run_study_checks_before_reading_data(tmp_path: Path):
    from medclf.experiments import load_checked_config, run_study

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(MINIMAL | {"training": {"optimizer": {"name": "adamm"}}}))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))} is not a valid medclf config: training\.optimizer"):
        load_checked_config(path)
    config = load_config(path)  # data.npz does not exist: the name is refused before it would be read
    with pytest.raises(ConfigError, match=r"^config is not a valid medclf config: training\.optimizer\.name: Unknown"):
        run_study(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------- enum values: did you mean
@pytest.mark.parametrize(("raw", "message"), [
    ({"data": {"source": {"type": "fold", "path": "x"}}},
     r"data\.source\.type: 'fold' is not a data source type\. Did you mean 'folds'\? Choose one of: folder, splits, "
     r"npz, csv, synthetic, folds, patients\.$"),
    ({"data": {"source": {"path": "x"}}},
     r"data\.source\.type: required key is missing\. Choose one of: folder, splits, npz, csv, synthetic, folds"),
    (MINIMAL | {"training": {"device": "metal"}},
     r"training\.device: 'metal' is not an accepted value\. Choose one of: auto, cpu, cuda\.$"),
    (MINIMAL | {"training": {"device": "cuda:1"}},
     r"training\.device: 'cuda:1' is not an accepted value\. Did you mean 'cuda'\? Choose one of: auto, cpu, cuda\.$"),
    (MINIMAL | {"data": {"source": MINIMAL["data"]["source"], "resize": "padd"}},
     r"data\.resize: 'padd' is not an accepted value\. Did you mean 'pad'\? Choose one of: resize, pad\.$"),
    (MINIMAL | {"model": {"name": "layers", "layers": [{"type": "conv", "filters": 4}, {"type": "maxpol"}]}},
     r"model\.layers\.1\.type: 'maxpol' is not a layer type\. Did you mean 'maxpool'\? Choose one of: conv, maxpool"),
])
def test_enum_values_and_variant_types_suggest_the_closest(raw: dict, message: str):
    with pytest.raises(ConfigError, match=r"^config is not a valid medclf config: " + message):
        parse_config(raw)


# ------------------------------------------------------------------------- overrides index into lists
STAGED = MINIMAL | {
    "model": {"name": "layers", "layers": [{"type": "conv", "filters": 4}, {"type": "maxpool"}, {"type": "flatten"}]},
    "training": {"stages": [{"epochs": 1, "freeze": "backbone"}, {"epochs": 2}]},
}


def test_dotted_overrides_index_into_lists(tmp_path: Path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STAGED))
    cfg = load_config(path, ["training.stages.0.optimizer.lr=0.01", "model.layers.1.type=avgpool",
                             "training.stages.1.epochs=3", "model.layers.0={type: conv, filters: 8}"])
    assert [s.optimizer.lr for s in cfg.training.stages] == [0.01, 1e-3]
    assert [s.epochs for s in cfg.training.stages] == [1, 3] and cfg.training.stages[0].freeze == "backbone"
    assert [layer.type for layer in cfg.model.layers] == ["conv", "avgpool", "flatten"]
    assert cfg.model.layers[0].filters == 8
    assert load_config(path, ["training.stages.1.lr=0.05"]).training.stages[1].optimizer.lr == 0.05  # the issue's
    assert yaml.safe_load(path.read_text()) == STAGED  # the file's own lists are left as written


@pytest.mark.parametrize(("override", "message"), [
    ("training.stages.2.optimizer.lr=0.01", r"^Override 'training\.stages\.2\.optimizer\.lr=0\.01': training\.stages "
                                            r"has 2 element\(s\), so there is no index 2; valid indices: 0, 1\.$"),
    ("training.stages.first.epochs=1", r"^Override 'training\.stages\.first\.epochs=1': training\.stages is a list of 2 "
                                       r"element\(s\), indexed by position, not by 'first'; valid indices: 0, 1\.$"),
    ("model.layers.-1.type=pool", r"model\.layers is a list of 3 element\(s\), indexed by position, not by '-1'; "
                                  r"valid indices: 0, 1, 2\.$"),
    ("model.layers.3=x", r"model\.layers has 3 element\(s\), so there is no index 3"),
    ("data.classes.0=a", r"data\.classes is an empty list, so it has no element '0' to set; write the whole list"),
])
def test_an_override_indexing_a_list_wrongly_names_its_length_and_valid_indices(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(STAGED | {"data": {"source": {"type": "synthetic"}, "classes": []}}, [override])


def test_an_index_into_a_list_the_config_does_not_write_says_so():
    # no training.stages in the YAML: the override makes a mapping, which validation names as a missed list
    with pytest.raises(ConfigError, match=r"training\.stages: an override set training\.stages\.<index> but the config "
                                          r"writes no list training\.stages to index .*set the whole list"):
        parse_config(apply_overrides(MINIMAL, ["training.stages.0.lr=0.01"]))


def test_data_memory_keys_are_checked_and_left_out_of_the_fingerprint(tmp_path: Path):
    base = parse_config(MINIMAL, base_dir=tmp_path)
    assert (base.data.memory, base.data.memory_share) == ("auto", 0.5)
    mapped = parse_config({"data": MINIMAL["data"] | {"memory": "mmap", "memory_share": 0.25}}, base_dir=tmp_path)
    assert config_fingerprint(mapped) == config_fingerprint(base)  # same pixels either way: runs resume
    with pytest.raises(ConfigError, match=r"data\.memory.*'disk'"):
        parse_config({"data": MINIMAL["data"] | {"memory": "disk"}})
    with pytest.raises(ConfigError, match=r"data\.memory_share"):
        parse_config({"data": MINIMAL["data"] | {"memory_share": 1.5}})


@pytest.mark.parametrize(("lever", "on"), [("ema", 0.999), ("mixup", {}), ("progressive_resize", {})])
def test_training_levers_off_leave_the_fingerprint_as_it_was_and_on_change_it(monkeypatch, lever, on):
    def study(**training):
        return parse_config({"data": {"source": {"type": "synthetic"}}, "training": training})

    now = config_fingerprint(study())
    real_dump = Config.model_dump

    def dump_before_the_key(self, **kw):  # the schema as it was before the lever existed
        data = real_dump(self, **kw)
        data["training"].pop(lever)
        return data

    monkeypatch.setattr(Config, "model_dump", dump_before_the_key)
    assert config_fingerprint(study()) == now
    monkeypatch.undo()
    assert config_fingerprint(study(**{lever: on})) != now
