"""Run a sweep: plan every variant's run folder in the store, run the missing folds, compare.

1. Each variant's data is loaded once (shared by variants with the same data section) and its run folder,
   ``DIR/runs/<key>/``, is prepared like any study's; ``DIR/sweep.json`` maps names to folders. Before any fold
   runs, every variant's folds are checked to hold the baseline's images (the tests are paired by fold) and a
   non-empty ``sweep.split`` part (the compared split).
2. The folds that are not complete (no verified ``complete.json``, :mod:`medclf.runfolder`) become tasks for
   the executor (local or Ray); complete folds are skipped, so a re-run after Ctrl-C or kill -9 resumes where
   the sweep stopped, and a damaged fold is trained again with a warning naming the file.
3. Each run folder is summarised (``summary.json``, ``folds.csv``), then the variants are compared
   (``comparison.json/.csv/.md``, and ``comparison.html`` through the reporting module).

A search (``sweep.search: random | optuna``) runs the base config and then its trials one at a time without
scoring the test split, optimising ``sweep.metric`` on ``sweep.split`` (holdout or val); the best config is then
run once more with test scored, and ``DIR/best.json`` holds its test metrics. A resumed search reuses the trials
the previous ``DIR/sweep.json`` lists whose folds all finished, and replays them into the sampler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medclf.atomic import atomic_write_json
from medclf.config import Config
from medclf.data import ImageSet, load_dataset
from medclf.errors import ConfigError
from medclf.evaluation.metrics import higher_is_better
from medclf.experiments.callbacks import log_to
from medclf.experiments.comparison import build_comparison, read_fold_results, write_comparison
from medclf.experiments.executors import Executor, FoldTask, make_executor
from medclf.experiments.search import in_space, make_sampler
from medclf.experiments.store import completed_folds, run_key, variant_dir, write_sweep_index
from medclf.experiments.study import PreparedStudy, fold_facts, prepare_study, run_fold, summarize_study
from medclf.experiments.sweep_config import SweepPlan, Variant
from medclf.runfolder import read_json

__all__ = ["run_sweep"]

Log = Callable[[str], None]
_log = log_to(logging.getLogger(__name__))  # the default `log`: status lines as log records


class _Store:
    """The sweep's run store as seen by the driver: planned variants, their folders and loaded data."""

    def __init__(self, plan: SweepPlan, out: Path, executor: Executor, log: Log) -> None:
        self.plan, self.out, self.executor, self.log = plan, out, executor, log
        self.data: dict[str, ImageSet] = {}
        self.studies: dict[Path, tuple[Config, PreparedStudy]] = {}
        self.dirs: dict[str, Path] = {}
        self.variants: list[Variant] = []
        self._fold_ids: dict[Path, list[dict[str, np.ndarray]]] = {}

    def load(self, config: Config) -> ImageSet:
        key = config.data.model_dump_json()
        if key not in self.data:
            self.data[key] = load_dataset(config.data)
        return self.data[key]

    def prepare(self, variant: Variant) -> Path:
        data = self.load(variant.config)
        run_dir = variant_dir(self.out, run_key(variant.config, data.fingerprint, score_test=variant.score_test))
        if run_dir not in self.studies:
            self.studies[run_dir] = (variant.config, prepare_study(variant.config, run_dir, data=data, log=self.log))
        self.dirs[variant.name] = run_dir
        self.variants.append(variant)
        return run_dir

    def run(self, variants: list[Variant]) -> None:
        """Prepare, run the missing folds of, and summarise ``variants``."""
        for v in variants:
            self.prepare(v)
        self.write_index()
        self.check_paired(variants)
        self.check_split(variants)
        tasks, seen, checked = [], set(), {}
        for v in variants:
            run_dir = self.dirs[v.name]
            config, study = self.studies[run_dir]
            if run_dir not in checked:  # variants sharing a folder: verify (and warn) once
                checked[run_dir] = completed_folds(run_dir, study.indices, expect=fold_facts(config, study.data),
                                                   log=self.log)
            done = checked[run_dir]
            if done:
                self.log(f"{v.name}: {len(done)}/{len(study.folds)} folds already complete, skipped")
            for fold in study.folds:
                if fold.index not in done and (run_dir, fold.index) not in seen:
                    seen.add((run_dir, fold.index))
                    tasks.append(FoldTask(v.name, v.config, run_dir, fold, study.data.fingerprint, v.score_test,
                                          n_folds=study.n_folds, folds_run=tuple(study.indices)))
        self.executor.run(tasks, run_inline=self._inline, log=self.log)
        for run_dir in {self.dirs[v.name] for v in variants}:
            config, study = self.studies[run_dir]
            summarize_study(config, study, run_dir, read_fold_results(run_dir, study.indices))

    def fold_ids(self, run_dir: Path) -> list[dict[str, np.ndarray]]:
        """Per fold, the sorted image ids of each part (train, val, holdout, test) of a prepared run folder."""
        if run_dir not in self._fold_ids:
            _, study = self.studies[run_dir]
            ids = study.data.ids
            self._fold_ids[run_dir] = [{part: np.sort(ids[idx]) for part, idx in f.parts().items()}
                                       for f in study.folds]
        return self._fold_ids[run_dir]

    def check_paired(self, variants: list[Variant]) -> None:
        """Refuse variants whose folds hold other images than the baseline's (compared by image id, part by part).

        Raises:
            ConfigError: naming each such variant and its first difference.
        """
        baseline = self.plan.baseline
        reference = self.fold_ids(self.dirs[baseline])
        differ = []
        for v in variants:
            why = None if v.name == baseline else _fold_difference(self.fold_ids(self.dirs[v.name]), reference)
            if why:
                differ.append(f"{v.name!r} ({why})")
        if differ:
            raise ConfigError(
                f"{self.plan.origin}: {'variant' if len(differ) == 1 else 'variants'} {', '.join(differ)} would run "
                f"on other folds than the baseline {baseline!r}. The paired tests compare each variant with the "
                "baseline fold by fold, so every variant needs the baseline's folds: the same images in each fold's "
                "train, val, holdout and test parts. An override of data.* or audit.* that changes which images "
                "there are or which are kept (another source, a subset, audit.leakage: drop_duplicates) changes the "
                "folds; set it in the base config, or compare those configs in separate sweeps."
            )

    def check_split(self, variants: list[Variant]) -> None:
        """Refuse a ``sweep.split`` that some fold has no images of, before anything trains.

        Raises:
            ConfigError: naming the split, the variant and its empty folds, and what to use instead.
        """
        split = self.plan.sweep.split
        for v in variants:
            _, study = self.studies[self.dirs[v.name]]
            empty = [f.index for f in study.folds if len(f.parts()[split]) == 0]
            if empty:
                raise ConfigError(
                    f"{self.plan.origin}: sweep.split: {split} compares each fold's {split} images, but variant "
                    f"{v.name!r} has none in fold {', '.join(map(str, empty))} ({_EMPTY_SPLIT[split]}). sweep.split "
                    "accepts holdout, val or test; choose one that every fold has."
                )

    def _inline(self, task: FoldTask) -> dict[str, Any]:
        _, study = self.studies[task.run_dir]
        result = run_fold(task.config, study, task.fold.index, task.run_dir, score_test=task.score_test)
        self.log(f"{task.variant}: fold {task.fold.index} done ({result['timing']['train_s']:.0f} s)")
        return result

    def entry(self, variant: Variant) -> dict[str, Any]:
        run_dir = self.dirs[variant.name]
        indices = self.studies[run_dir][1].indices  # cv.folds may run a subset: the same one for every variant
        return {"name": variant.name, "overrides": variant.overrides, "run_dir": str(run_dir.relative_to(self.out)),
                "folds": read_fold_results(run_dir, indices)}

    def score(self, variant: Variant) -> float | None:
        """Mean of ``sweep.metric`` on ``sweep.split`` across folds (None when undefined on every fold)."""
        s = self.plan.sweep
        values = [f["metrics"].get(s.split, {}).get(s.metric) for f in self.entry(variant)["folds"]]
        values = [v for v in values if v is not None and v == v]
        return sum(values) / len(values) if values else None

    def write_index(self, best: dict[str, Any] | None = None) -> None:
        s = self.plan.sweep
        write_sweep_index(self.out, {
            "sweep_file": self.plan.origin, "metric": s.metric, "split": s.split, "search": s.search,
            "baseline": self.plan.baseline,
            "variants": [{"name": v.name, "overrides": v.overrides, "run_dir": str(self.dirs[v.name].relative_to(
                self.out)), "score_test": v.score_test} for v in self.variants],
            "best": best,
        })


_EMPTY_SPLIT = {
    "holdout": "cv.mode: holdout trains once on the data's train split and holds nothing out; compare on val",
    "val": "the fold has no validation images",
    "test": "the data has no test split and cv.test_fraction is 0; compare on holdout, or set cv.test_fraction",
}


def _fold_difference(folds: list[dict[str, np.ndarray]], reference: list[dict[str, np.ndarray]]) -> str | None:
    """The first way ``folds`` differ from the baseline's ``reference`` (None when they hold the same images)."""
    if len(folds) != len(reference):
        return f"{len(folds)} folds, the baseline has {len(reference)}"
    for k, (mine, theirs) in enumerate(zip(folds, reference)):
        for part in mine:
            if not np.array_equal(mine[part], theirs[part]):
                n_new = len(np.setdiff1d(mine[part], theirs[part]))
                n_missing = len(np.setdiff1d(theirs[part], mine[part]))
                return (f"fold {k}'s {part} part has {n_new} images the baseline's lacks and lacks {n_missing} of "
                        "the baseline's")
    return None


def _finished_trials(plan: SweepPlan, store: _Store, previous: dict[str, Any] | None) -> list[Variant]:
    """The trials an earlier run of this search finished (every fold), in order, from its ``sweep.json``.

    Stops at the first trial that is unfinished, outside the current ``sweep.space``, or beyond ``sweep.trials``;
    a trial counts only if its config still resolves to the folder it ran in (same base, same data).
    """
    if not previous or previous.get("search") != plan.sweep.search:
        return []
    indices = store.studies[store.dirs[plan.baseline]][1].indices
    recorded = [v for v in previous.get("variants", []) if str(v.get("name", "")).startswith("trial-")]
    finished = []
    for i, entry in enumerate(recorded[:plan.sweep.trials]):
        if entry["name"] != f"trial-{i:03d}" or not in_space(plan.sweep.space, entry.get("overrides", {})):
            break
        trial = plan.make_variant(entry["name"], entry["overrides"], score_test=False)
        key = run_key(trial.config, store.load(trial.config).fingerprint, score_test=False)
        if len(completed_folds(variant_dir(store.out, key), indices)) < len(indices):
            break
        finished.append(trial)
    return finished


def _search(plan: SweepPlan, store: _Store, previous: dict[str, Any] | None = None) -> list[Variant]:
    """Run the base and ``sweep.trials`` sampled trials (validation only), then the best one with test scored.

    ``previous`` is the sweep folder's ``sweep.json`` from an earlier run: its finished trials are reused and
    replayed into the sampler rather than proposed again.
    """
    s = plan.sweep
    maximize = higher_is_better(s.metric)
    sampler = make_sampler(s.search, s.space, seed=s.seed, maximize=maximize)
    trials = list(plan.variants)  # the base config, the baseline
    store.run(trials)
    scores = {trials[0].name: store.score(trials[0])}
    finished = _finished_trials(plan, store, previous)
    for trial in finished:
        store.run([trial])  # every fold is done: prepared, checked and summarised, nothing trained
        scores[trial.name] = store.score(trial)
        trials.append(trial)
    if finished:
        sampler.replay([(t.overrides, scores[t.name]) for t in finished])
        store.log(f"resumed: {len(finished)} finished trials replayed into the {s.search} sampler")
    for i in range(len(finished), s.trials):
        trial = plan.make_variant(f"trial-{i:03d}", sampler.ask(), score_test=False)
        store.run([trial])
        scores[trial.name] = store.score(trial)
        sampler.tell(scores[trial.name])
        store.log(f"{trial.name}: {s.metric} on {s.split} {scores[trial.name]} with {trial.overrides}")
        trials.append(trial)
    ranked = [t for t in trials if scores[t.name] is not None]
    best = (max if maximize else min)(ranked, key=lambda t: scores[t.name]) if ranked else trials[0]
    final = plan.make_variant("best", best.overrides, score_test=True)
    store.run([final])
    summary = read_json(store.dirs["best"] / "summary.json", fix="rerun the sweep to rebuild it")
    record = {
        "trial": best.name, "overrides": best.overrides,
        "selected_on": {"metric": s.metric, "split": s.split, "mean": scores[best.name]},
        "run_dir": str(store.dirs["best"].relative_to(store.out)),
        "test": summary["metrics"].get("test"), "ensemble_test": summary["ensemble"].get("test"),
    }
    atomic_write_json(store.out / "best.json", record)
    store.write_index(best=record)
    return trials


def _previous_index(out: Path, log: Log) -> dict[str, Any] | None:
    """The ``sweep.json`` of an earlier run of this sweep; an unreadable one only costs the search's replay."""
    from medclf.errors import RunFolderError

    if not (out / "sweep.json").exists():
        return None
    try:
        previous = read_json(out / "sweep.json", fix="it is rewritten now")
    except RunFolderError as error:
        log(f"warning: {error} A search proposes its trials again; their finished folds are reused from the run "
            "store.")
        return None
    return previous if isinstance(previous, dict) else None


def run_sweep(
    plan: SweepPlan, out: Path, *, executor: str = "local", parallel: int = 1, address: str | None = None,
    log: Log = _log,
) -> dict[str, Any]:
    """Run (or resume) the sweep ``plan`` into ``out`` and write its comparison.

    Args:
        plan: the loaded sweep (:func:`medclf.experiments.sweep_config.load_sweep`).
        out: the sweep folder; created when missing. Resolved to an absolute path, since Ray workers (on other
            nodes, in other working directories) write their folds into it.
        executor: ``local`` or ``ray``.
        parallel: folds at once: worker processes (local), or a local Ray of that many tasks' CPUs
            (``sweep.ray.num_cpus_per_task`` each).
        address: a Ray cluster to join (``ray`` only).
        log: receives one-line status messages (default: this module's logger; ``warning:`` lines at WARNING).

    Returns:
        The comparison written to ``out/comparison.json``.
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_index(out, log)  # before it is rewritten
    store = _Store(plan, out, make_executor(executor, ray=plan.sweep.ray, parallel=parallel, address=address), log)
    if plan.sweep.search == "grid":
        store.run(plan.variants)
        compared = plan.variants
    else:
        compared = _search(plan, store, previous)
    s = plan.sweep
    comparison = build_comparison([store.entry(v) for v in compared], metric=s.metric, split=s.split,
                                  baseline=plan.baseline, alpha=s.alpha)
    write_comparison(out, comparison)  # comparison.html is drawn from these files by medclf.reporting
    return comparison
