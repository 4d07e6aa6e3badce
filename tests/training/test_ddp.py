"""Two processes under torchrun (gloo, CPU) train one fold data-parallel; only rank 0 writes; a rerun resumes.

``MEDCLF_DDP_GUARD=1`` makes any write by a rank but 0 raise (medclf.atomic), so a run that exits 0 wrote from
rank 0 alone. Run and resume share one torchrun launch (tests/training/_run_twice.py). Run with ``-s`` to see
the output.
"""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from medclf import runfolder
from medclf.config import config_fingerprint
from medclf.experiments.validation import load_checked_config
from tiny_data import tiny_study


def _torchrun_twice(config, out) -> subprocess.CompletedProcess:
    """``medclf run CONFIG --out OUT --folds 0 --quiet`` under torchrun, twice in the same two processes."""
    args = ["run", str(config), "--out", str(out), "--folds", "0", "--quiet"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(Path(__file__).with_name("_run_twice.py")), *args]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MEDCLF_DDP_GUARD": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    print(f"$ OMP_NUM_THREADS=1 MEDCLF_DDP_GUARD=1 python {' '.join(command[1:])}\n"
          f"# _run_twice.py: `medclf {' '.join(args)}`, then the same again, in each of the two processes\n"
          f"{done.stdout}{done.stderr}(exit {done.returncode})")
    return done


def test_two_processes_train_a_fold_only_rank_0_writes_and_a_rerun_resumes(tiny_splits, tmp_path):
    # two stages: the second unfreezes the backbone, so each stage wraps the model in DDP after its freezing
    stages = [{"epochs": 1, "freeze": "backbone"}, {"epochs": 2}]
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(tiny_study(tiny_splits, tmp_path / "cache", name="ddp",
                                                training={"stages": stages})))
    out = tmp_path / "run"

    done = _torchrun_twice(config, out)
    assert done.returncode == 0, done.stderr  # with the guard, any write by rank 1 would have failed the run
    assert done.stdout.count("report ") == 2  # one per run: rank 1 prints nothing, rank 0 summarises and reports
    first, second = done.stdout.split("report ", 1)
    assert "fold 0: best epoch" in first
    assert "fold 0: already complete, skipped" in second and "fold 0: best epoch" not in second  # resumed

    print((out / "fold-0" / runfolder.HISTORY).read_text())  # for -s: the loss per epoch
    history = runfolder.read_history(out / "fold-0" / runfolder.HISTORY)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    expect = {"config_fingerprint": config_fingerprint(load_checked_config(config, ["cv.folds=[0]"])),
              "data_fingerprint": runfolder.read_json(out / runfolder.DATA)["fingerprint"]}
    assert runfolder.check_fold(out, 0, expect).complete
    assert runfolder.read_json(out / "fold-0" / runfolder.METRICS)["runtime"]["processes"] == 2
