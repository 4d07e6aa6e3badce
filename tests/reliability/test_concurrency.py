"""Two writers at once: while one command writes a folder, a second writer is refused and changes nothing."""

from __future__ import annotations

import yaml
from reliability_harness import Pause, assert_clean_refusal, file_hashes, results


def test_a_second_writer_is_refused_while_a_run_writes_the_folder(cli, reference, tmp_path):
    out = tmp_path / "run"
    pause = Pause(tmp_path)
    # the first writer stops, alive and holding the folder, right after fold 0's weights are written
    first = cli.start("run", reference.config, "--out", out, "--quiet", fault="pause:written:*/fold-0/model.safetensors",
                      env=pause.env, no_report=True)
    try:
        assert pause.reached(), first.wait()
        before = file_hashes(out)
        other = tmp_path / "other.yaml"  # a different config: --overwrite would delete the first run's files
        other.write_text(yaml.safe_dump(yaml.safe_load(reference.config.read_text()) | {"seed": 1}))
        seconds = {
            "run": cli("run", reference.config, "--out", out, "--quiet"),
            "run --overwrite": cli("run", other, "--out", out, "--overwrite", "--quiet"),
            "report": cli("report", out),
        }
        for command, second in seconds.items():
            assert_clean_refusal(second, str(first.pid))
            assert file_hashes(out) == before, f"{command} changed the folder another run was writing"
    finally:
        pause.release()
    done = first.wait()
    assert done.returncode == 0, done
    assert str(out) in " ".join(done.stdout.split())  # "results in <out>" points at results that exist
    assert results(out) == reference.results


def test_a_second_sweep_is_refused_while_a_sweep_writes_the_folder(cli, reference, tmp_path):
    cfg = yaml.safe_load(reference.config.read_text())
    cfg["sweep"] = {"variants": {"adamw": {}, "lr": {"training.optimizer.lr": 0.01}}, "baseline": "adamw"}
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = tmp_path / "sweep"
    pause = Pause(tmp_path)
    first = cli.start("sweep", sweep, "--out", out, fault="pause:written:*/runs/*/fold-0/model.safetensors",
                      env=pause.env, no_report=True)
    try:
        assert pause.reached(), first.wait()
        before = file_hashes(out)
        for second in (cli("sweep", sweep, "--out", out), cli("report", out)):
            assert_clean_refusal(second, str(first.pid))
            assert file_hashes(out) == before
    finally:
        pause.release()
    done = first.wait()
    assert done.returncode == 0, done
    assert (out / "comparison.json").exists()
