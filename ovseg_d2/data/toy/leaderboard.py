"""The toy-world leaderboard (`tools/run_demo.py --methods all`, `make leaderboard`): every method's toy
config trained the way its paper trains and evaluated on the same `toy_val`, in one table.

Discovery: a LazyConfig under configs/ takes part by declaring a top-level `leaderboard` dict
(see :class:`Entry`); a method added later appears without editing this module.

Every stage is cached in the output folder and recognised by its final artefact, written atomically
once the stage has succeeded: `training.json` (training), `evaluation.json` (evaluation), `run.json`
(both done: ovseg_d2.engine.run_record, the record tools/web_demo.py lists), `<prepared
folder>/_prepared.json` (prerequisites).
An interrupted training resumes exactly from its newest intact checkpoint. A failing stage is
recorded (exception, log path) and the others go on. `recipe.json` records what a run is computed from
(:meth:`Leaderboard.recipe`); a run folder of another recipe (the config, its declared overrides or the
iterations changed since) is reported in its row, never reused or overwritten.

Several processes may share one output folder (`make leaderboard` started twice): a stage runs under
a lock on its run folder, a process skips a stage another one holds and comes back to it (waiting)
after the rest of its plan, and prerequisites and tiny CLIPs are built once under their own locks.

Layout of OUTPUT: toy_world/ (shared by every run), clip<c>/ (tiny CLIP of pretraining seed c and the
prerequisites that depend on it), runs/<config id>/<run key>/ (one stage run: checkpoints, stage.log,
the markers above), leaderboard.md, leaderboard.json, leaderboard_runs.json.
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from detectron2.config import LazyConfig
from omegaconf import OmegaConf

from ...engine.run_record import RunRecord
from ...utils.atomic import write_json_atomic
from ...utils.locks import exclusive, lock_file
from ...utils.repo_paths import REPO_ROOT, from_repo, repo_relative
from .register import DEFAULT_ROOT

VAL_DATASET = "toy_val"
METRICS = ("mIoU", "mIoU-seen", "mIoU-unseen", "hIoU")
# Only files that mention the declaration are loaded (loading every paper config would import every project).
DECLARATION = re.compile(r"^leaderboard\s*=", re.MULTILINE)
CHECKPOINT_ITERATION = re.compile(r"model_(\d+)\.pth$")
FINAL_CHECKPOINT = "model_final.pth"
LOGGERS = ("detectron2", "ovseg_d2", "fvcore")


@dataclass(frozen=True)
class Prepare:
    """A prerequisite command (e.g. tools/build_eigen_cache.py) that creates the folder `output`."""

    command: tuple[str, ...]
    output: str


@dataclass(frozen=True)
class Entry:
    """One leaderboard row, from a toy config's top-level declaration:

        leaderboard = dict(
            name="CAT-Seg",                       # the row's name
            trained_on="seen masks",              # what the method's training sees
            overrides=["model.clip_weights={clip_weights}"],   # config overrides (templates below)
            after="configs/cascade_clip/cascade_clip_toy.py",  # optional: the stage this one starts from
            checkpoint="model_0000299.pth",       # optional: which checkpoint of `after` (default final)
            prepare=[dict(command=[...], output="{clip_dir}/eigs")],  # optional prerequisites
            eval_only=False,                      # True: evaluated, never trained
            reference=False,                      # True: the floor the other rows are compared to
        )

    Templates in `overrides` and `prepare`: {repo}, {python}, {datasets} ($DETECTRON2_DATASETS),
    {world}, {clip_dir}, {clip_weights}, {run_dir} (this stage's folder), {parent_dir} (the folder
    of `after`), {parent_checkpoint} (`checkpoint` of `after`). A stage that mentions no {clip_*}
    (and whose `after` does not) is run once for all pretraining seeds; an eval-only stage without
    a trained `after` once for all training seeds.
    """

    id: str  # the config's path under configs/ without `.py` (`catseg/catseg_toy`)
    config: str  # its path, relative to the repository where it lies in it
    name: str
    trained_on: str
    overrides: tuple[str, ...] = ()
    after: str | None = None  # the id of the stage this one starts from
    checkpoint: str = FINAL_CHECKPOINT
    prepare: tuple[Prepare, ...] = ()
    eval_only: bool = False
    reference: bool = False

    @property
    def method(self) -> str:
        return self.id.split("/")[0]

    def templates(self) -> Iterator[str]:
        yield from self.overrides
        for step in self.prepare:
            yield from step.command
            yield step.output


KNOWN_KEYS = {"name", "trained_on", "overrides", "after", "checkpoint", "prepare", "eval_only", "reference"}


def config_id(path: str | Path, config_root: Path) -> str:
    """`configs/catseg/catseg_toy.py` -> `catseg/catseg_toy` (a path relative to the repository or absolute)."""
    return from_repo(path).relative_to(config_root).with_suffix("").as_posix()


def parse_entry(path: Path, declaration: dict[str, Any], config_root: Path = REPO_ROOT / "configs") -> Entry:
    """The `leaderboard` dict of the config `path` as an :class:`Entry`; unknown or missing keys are an error."""
    config = repo_relative(path)
    declaration = dict(declaration)
    unknown = set(declaration) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"{config}: unknown leaderboard keys {sorted(unknown)} (known: {sorted(KNOWN_KEYS)})")
    for key in ("name", "trained_on"):
        if not declaration.get(key):
            raise ValueError(f"{config}: the leaderboard declaration needs `{key}`")
    prepare = tuple(
        Prepare(command=tuple(step["command"]), output=step["output"]) for step in declaration.pop("prepare", ())
    )
    if declaration.get("after") is not None:
        declaration["after"] = config_id(declaration["after"], config_root)
    return Entry(
        id=config_id(path, config_root), config=config, prepare=prepare,
        overrides=tuple(declaration.pop("overrides", ())), **declaration,
    )


def discover(config_root: Path = REPO_ROOT / "configs") -> dict[str, Entry]:
    """Every config under `config_root` that declares a top-level `leaderboard`, by id, in dependency
    order (a stage after the one it starts from; reference rows first). `after` names a config path
    relative to the repository."""
    entries = {}
    for path in sorted(config_root.rglob("*.py")):
        if not DECLARATION.search(path.read_text()):
            continue
        cfg = LazyConfig.load(str(path))
        if "leaderboard" not in cfg:
            raise ValueError(f"{path}: `leaderboard = ...` is not a dict the LazyConfig keeps")
        entry = parse_entry(path, OmegaConf.to_container(cfg.leaderboard, resolve=True), config_root)
        entries[entry.id] = entry
    return order_entries(entries)


def order_entries(entries: dict[str, Entry]) -> dict[str, Entry]:
    """`entries` (by id) in dependency order, reference rows first; a dangling `after` is an error."""
    for entry in entries.values():
        if entry.after is not None and entry.after not in entries:
            raise ValueError(
                f"{entry.config}: leaderboard after={entry.after!r} is not a config with a leaderboard "
                f"declaration (declared: {sorted(entries)})"
            )
    return {entry.id: entry for entry in _dependency_order(entries)}


def _dependency_order(entries: dict[str, Entry]) -> list[Entry]:
    ordered: list[Entry] = []

    def visit(entry: Entry, chain: tuple[str, ...]) -> None:
        if entry.id in chain:
            raise ValueError(f"leaderboard `after` cycle: {' -> '.join(chain + (entry.id,))}")
        if entry in ordered:
            return
        if entry.after is not None:
            visit(entries[entry.after], chain + (entry.id,))
        ordered.append(entry)

    for entry in sorted(entries.values(), key=lambda e: not e.reference):  # the floor first: it is cheap
        visit(entry, ())
    return ordered


def select(entries: dict[str, Entry], methods: str) -> dict[str, Entry]:
    """`all`, or comma-separated method folders (`catseg`) / config ids (`cascade_clip/cascade_clip_toy_st`).
    The stages a selected one starts from and the reference rows are always included."""
    if methods == "all":
        return dict(entries)
    wanted = {name.strip() for name in methods.split(",") if name.strip()}
    unknown = wanted - {e.method for e in entries.values()} - {e.id for e in entries.values()}
    if unknown:
        known = sorted({e.method for e in entries.values()} | {e.id for e in entries.values()})
        raise ValueError(f"--methods: unknown {sorted(unknown)}; known: {', '.join(known)} (or `all`)")
    chosen = {i for i, e in entries.items() if e.method in wanted or i in wanted or e.reference}
    for entry_id in list(chosen):
        while entries[entry_id].after is not None:
            entry_id = entries[entry_id].after
            chosen.add(entry_id)
    return {i: e for i, e in entries.items() if i in chosen}


def uses_clip(entry: Entry, entries: dict[str, Entry]) -> bool:
    if any("{clip_" in t for t in entry.templates()):
        return True
    return entry.after is not None and uses_clip(entries[entry.after], entries)


def uses_seed(entry: Entry, entries: dict[str, Entry]) -> bool:
    if not entry.eval_only:
        return True
    return entry.after is not None and uses_seed(entries[entry.after], entries)


@functools.cache
def _loaded_config(config: str) -> Any:
    """The config (a path relative to the repository) as loaded, once per config; never modified."""
    return LazyConfig.load(str(from_repo(config)))


def load_config_copy(config: str) -> Any:
    """A copy of the loaded config, free to modify."""
    return copy.deepcopy(_loaded_config(config))


def configured_max_iter(config: str) -> int:
    """`train.max_iter` of the config."""
    return int(_loaded_config(config).train.max_iter)


@functools.cache
def resolved_config(config: str) -> str:
    """The config as loaded (its imports resolved), as YAML, without its `leaderboard` declaration (the
    row's name is no part of the recipe) and with the repository's path written `{repo}`."""
    cfg = load_config_copy(config)
    cfg.pop("leaderboard", None)
    return OmegaConf.to_yaml(cfg).replace(str(REPO_ROOT), "{repo}")


def run_key(entry: Entry, entries: dict[str, Entry], clip_seed: int, seed: int) -> str:
    """The folder name of one run: the seeds it depends on (`clip0-seed1`, `clip0`, `seed1`, `once`)."""
    parts = [f"clip{clip_seed}"] if uses_clip(entry, entries) else []
    parts += [f"seed{seed}"] if uses_seed(entry, entries) else []
    return "-".join(parts) or "once"


@dataclass
class Options:
    output: Path
    clip_seeds: Sequence[int] = (0,)
    seeds: Sequence[int] = (0,)
    max_iter: int | None = None  # smoke mode: caps every stage's train.max_iter
    device: str = "cpu"


@dataclass
class Context:
    """Where a run of one stage lives, and the values of its templates."""

    entry: Entry
    run_dir: Path
    parent_dir: Path | None
    values: dict[str, str]

    def fill(self, template: str) -> str:
        try:
            return template.format(**self.values)
        except KeyError as error:
            raise ValueError(
                f"{self.entry.config}: leaderboard template {template!r} names {error}, known: {sorted(self.values)}"
            ) from None


@contextmanager
def stage_log(path: Path) -> Iterator[None]:
    """Detectron2 / ovseg_d2 / fvcore logs of the stage go to `path` (INFO and up), and its exception
    with its traceback."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s"))
    saved = []
    for name in LOGGERS:
        log = logging.getLogger(name)
        saved.append((log, log.level))
        log.addHandler(handler)
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)
    try:
        yield
    except Exception:
        handler.stream.write(traceback.format_exc())
        raise
    finally:
        for log, level in saved:
            log.removeHandler(handler)
            log.setLevel(level)
        handler.close()


def last_line(error: BaseException) -> str:
    lines = traceback.format_exception_only(type(error), error)
    return "".join(lines).strip().splitlines()[-1]


class Leaderboard:
    """Runs the stages of `entries` for every (pretraining seed, training seed) and collects the rows."""

    def __init__(self, entries: dict[str, Entry], options: Options, log: Callable[[str], None] = print) -> None:
        self.entries, self.options, self.log = entries, options, log
        self.output = options.output.resolve()
        self.world = self.output / DEFAULT_ROOT
        self.start = time.perf_counter()
        self.results: dict[tuple[str, str], dict[str, Any]] = {}  # (config, run key) -> outcome
        self.clip_errors: dict[int, str] = {}  # pretraining seed -> why its tiny CLIP failed

    # --- one run of one stage ------------------------------------------------------------------
    def context(self, entry: Entry, clip_seed: int, seed: int) -> Context:
        run_dir = self.output / "runs" / entry.id / run_key(entry, self.entries, clip_seed, seed)
        parent_dir = None
        values = {
            "repo": str(REPO_ROOT), "python": sys.executable, "datasets": str(self.output), "world": str(self.world),
            "clip_dir": str(self.clip_dir(clip_seed)), "clip_weights": str(self.clip_dir(clip_seed) / "tiny_clip.pt"),
            "run_dir": str(run_dir),
        }
        if entry.after is not None:
            parent = self.entries[entry.after]
            parent_dir = self.output / "runs" / parent.id / run_key(parent, self.entries, clip_seed, seed)
            values["parent_dir"] = str(parent_dir)
            values["parent_checkpoint"] = str(parent_dir / self.parent_checkpoint(entry))
        return Context(entry, run_dir, parent_dir, values)

    def clip_dir(self, clip_seed: int) -> Path:
        return self.output / f"clip{clip_seed}"

    def max_iter(self, entry: Entry) -> int:
        """The training iterations of `entry` (0 when eval-only), capped in smoke mode."""
        if entry.eval_only:
            return 0
        configured = configured_max_iter(entry.config)
        cap = self.options.max_iter
        return configured if cap is None else min(configured, cap)

    def parent_checkpoint(self, entry: Entry) -> str:
        """`entry.checkpoint` of its `after` stage; the final one where a smoke-mode cap never reaches it."""
        match = CHECKPOINT_ITERATION.match(entry.checkpoint)
        if match and int(match.group(1)) >= self.max_iter(self.entries[entry.after]):
            return FINAL_CHECKPOINT
        return entry.checkpoint

    def iterations(self, entry: Entry) -> list[int]:
        """Iterations of each training stage behind the row, first stage first (`300 + 300`)."""
        if entry.after is None:
            chain: list[int] = []
        else:
            chain = self.iterations(self.entries[entry.after])
            match = CHECKPOINT_ITERATION.match(self.parent_checkpoint(entry))
            if match and chain:
                chain[-1] = int(match.group(1)) + 1
        return chain + ([] if entry.eval_only else [self.max_iter(entry)])

    def recipe(self, entry: Entry) -> dict[str, Any]:
        """What every run of `entry` is computed from, besides its seeds: the resolved config, the declared
        overrides (as templates: the output folder may move), the iterations, the device, and the recipe
        of the stage it starts from. Changes to the code are not seen."""
        recipe: dict[str, Any] = {
            "config": resolved_config(entry.config), "overrides": list(entry.overrides),
            "max_iter": self.max_iter(entry), "device": self.options.device,
        }
        if entry.after is not None:
            recipe["after"] = {
                "checkpoint": self.parent_checkpoint(entry), **self.recipe(self.entries[entry.after]),
            }
        return recipe

    def check_recipe(self, ctx: Context) -> None:
        """Record the recipe in a new run folder; refuse a folder that holds a run of another recipe (or
        one recorded before recipes were), naming what differs."""
        path = ctx.run_dir / "recipe.json"
        recipe = self.recipe(ctx.entry)
        if not path.exists():
            markers = ("training.json", "evaluation.json", "last_checkpoint")
            recorded_before = [name for name in markers if (ctx.run_dir / name).exists()]
            if recorded_before:
                raise RuntimeError(
                    f"{ctx.run_dir} holds a run recorded before recipe.json existed ({', '.join(recorded_before)}); "
                    "delete that folder to run it again with the current recipe"
                )
            write_json_atomic(path, recipe)
            return
        recorded = json.loads(path.read_text())
        if recorded != recipe:
            changed = sorted(k for k in recipe.keys() | recorded.keys() if recipe.get(k) != recorded.get(k))
            raise RuntimeError(
                f"{ctx.run_dir} holds a run of another recipe ({', '.join(changed)} changed since; "
                f"{path.name} holds the old one); delete that folder to run it again with the current recipe"
            )

    def config_overrides(self, ctx: Context) -> list[str]:
        """The entry's overrides, filled in: what rebuilds its model (run.json), training and evaluation add theirs."""
        return [ctx.fill(o) for o in ctx.entry.overrides]

    def train(self, ctx: Context, seed: int) -> float:
        """Train (resuming an interrupted run); the seconds it took (after an interruption: of the resumed
        part), kept in training.json."""
        from ovseg_d2.engine import do_train, load_config

        marker = ctx.run_dir / "training.json"
        if marker.exists():
            return json.loads(marker.read_text())["seconds"]
        overrides = self.config_overrides(ctx) + [
            f"train.output_dir={ctx.run_dir}", f"train.seed={seed}", f"train.device={self.options.device}",
            f"train.max_iter={self.max_iter(ctx.entry)}",
            # Detectron2's EvalHook evaluates after the last iteration whatever eval_period says; the
            # evaluation of the leaderboard is the separate, timed one.
            "dataloader.test_datasets=[]",
        ]
        if ctx.entry.after is not None:
            overrides.append(f"train.init_checkpoint={ctx.values['parent_checkpoint']}")
        start = time.perf_counter()
        do_train(load_config(str(from_repo(ctx.entry.config)), overrides), resume=True)
        seconds = round(time.perf_counter() - start, 1)
        write_json_atomic(marker, {"seconds": seconds, "max_iter": self.max_iter(ctx.entry), "seed": seed})
        return seconds

    def weights(self, ctx: Context) -> str:
        """The checkpoint evaluated: the stage's final one, or an eval-only stage's `train.init_checkpoint`."""
        if not ctx.entry.eval_only:
            return str(ctx.run_dir / FINAL_CHECKPOINT)
        cfg = load_config_copy(ctx.entry.config)
        init = LazyConfig.apply_overrides(cfg, self.config_overrides(ctx)).train.init_checkpoint
        return init or "none"

    def evaluate(self, ctx: Context) -> dict[str, Any]:
        """Metrics on toy_val and inference seconds per image (wall time of the whole evaluation:
        data loading, model, evaluator), kept in evaluation.json."""
        from detectron2.data import DatasetCatalog

        from ovseg_d2.engine import build_model, do_test, load_config, load_model_weights

        marker = ctx.run_dir / "evaluation.json"
        if marker.exists():
            return json.loads(marker.read_text())
        weights = self.weights(ctx)
        overrides = self.config_overrides(ctx) + [
            f"train.output_dir={ctx.run_dir}", f"train.device={self.options.device}",
            f"dataloader.test_datasets=[{VAL_DATASET}]",
        ]
        cfg = load_config(str(from_repo(ctx.entry.config)), overrides)
        model = build_model(cfg)
        if weights != "none":
            load_model_weights(model, weights, strict=True)
        model.eval()
        start = time.perf_counter()
        sem_seg = do_test(cfg, model)[VAL_DATASET]["sem_seg"]
        seconds = time.perf_counter() - start
        result = {
            "metrics": {k: float(sem_seg[k]) for k in METRICS},
            "inference_s_per_image": round(seconds / len(DatasetCatalog.get(VAL_DATASET)), 4),
        }
        write_json_atomic(marker, result)
        return result

    def prepare(self, ctx: Context) -> float:
        """Run the entry's prerequisite commands whose output folder is not marked done; their seconds."""
        total = 0.0
        for step in ctx.entry.prepare:
            output = Path(ctx.fill(step.output))
            with exclusive(lock_file(output)):  # shared by the runs of a pretraining seed
                total += self.prepare_step(ctx, [ctx.fill(part) for part in step.command], output)
        return total

    @staticmethod
    def prepare_step(ctx: Context, command: list[str], output: Path) -> float:
        marker = output / "_prepared.json"
        if marker.exists():
            return json.loads(marker.read_text())["seconds"]
        start = time.perf_counter()
        with (ctx.run_dir / "stage.log").open("a") as log:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            done = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        if done.returncode != 0:
            raise RuntimeError(f"prerequisite `{' '.join(command)}` exited with status {done.returncode}")
        seconds = round(time.perf_counter() - start, 1)
        write_json_atomic(marker, {"command": command, "seconds": seconds})
        return seconds

    def run_stage(self, entry: Entry, clip_seed: int, seed: int, wait: bool = True) -> dict[str, Any] | None:
        """Prerequisites, training, evaluation and run.json of one run, under the lock of its folder; the
        outcome (or the failure). None, with `wait=False`, when another process holds the run (or the
        run it starts from was put off)."""
        ctx = self.context(entry, clip_seed, seed)
        key = (entry.id, ctx.run_dir.name)
        if key in self.results:  # a run shared by several seeds (see run_key)
            return self.results[key]
        if ctx.parent_dir is not None and (entry.after, ctx.parent_dir.name) not in self.results:
            return None  # its parent was put off: so is it (a waiting pass takes both in plan order)
        with exclusive(lock_file(ctx.run_dir), wait=wait) as held:
            return self._run_stage(ctx, key, clip_seed, seed) if held else None

    def _run_stage(self, ctx: Context, key: tuple[str, str], clip_seed: int, seed: int) -> dict[str, Any]:
        entry = ctx.entry
        log_path = ctx.run_dir / "stage.log"
        outcome: dict[str, Any] = {"run": ctx.run_dir.name, "log": str(log_path)}
        parent = self.results.get((entry.after, ctx.parent_dir.name)) if ctx.parent_dir is not None else None
        if parent is not None and "error" in parent:
            outcome["error"] = f"not run: {entry.after} failed ({parent['error']})"
        elif clip_seed in self.clip_errors and uses_clip(entry, self.entries):
            why = self.clip_errors[clip_seed]
            outcome["error"] = f"not run: the tiny CLIP of pretraining seed {clip_seed} failed ({why})"
        if "error" in outcome:
            self.results[key] = outcome
            return outcome
        try:
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            with stage_log(log_path):
                self.check_recipe(ctx)
                outcome["prepare_s"] = self.prepare(ctx)
                outcome["train_s"] = 0.0 if entry.eval_only else self.train(ctx, seed)
                outcome.update(self.evaluate(ctx))
                weights = self.weights(ctx)
                RunRecord.of(
                    entry.name, REPO_ROOT / entry.config, self.config_overrides(ctx), weights, VAL_DATASET
                ).write(ctx.run_dir)
        except Exception as error:  # noqa: BLE001  a failing method must not sink the others
            outcome["error"] = last_line(error)
        outcome["train_s_chain"] = outcome.get("train_s", 0.0) + (parent or {}).get("train_s_chain", 0.0)
        self.results[key] = outcome
        return outcome

    # --- the whole leaderboard -----------------------------------------------------------------
    def run(self, pretrain_clip: Callable[[int], None]) -> dict[str, Any]:
        """Every stage for every seed pair (CLIPs first, via `pretrain_clip(clip_seed)`), then the table."""
        runs = []
        plan = [(c, s, e) for c in self.options.clip_seeds for s in self.options.seeds for e in self.entries.values()]
        for clip_seed in self.options.clip_seeds:
            self.progress(f"tiny CLIP of pretraining seed {clip_seed}")
            try:
                pretrain_clip(clip_seed)
            except Exception as error:  # noqa: BLE001  the stages without the tiny CLIP still run
                self.clip_errors[clip_seed] = last_line(error)
                self.progress(f"    FAILED: {self.clip_errors[clip_seed]}")

        def record(index: int, outcome: dict[str, Any]) -> None:
            clip_seed, seed, entry = plan[index - 1]
            self.report(outcome)
            runs.append((index, {"id": entry.id, "clip_seed": clip_seed, "seed": seed, **outcome}))

        put_off = []
        for index, (clip_seed, seed, entry) in enumerate(plan, 1):
            label = f"[{index}/{len(plan)}] {entry.name} ({entry.id}, clip seed {clip_seed}, seed {seed})"
            self.progress(label)
            outcome = self.run_stage(entry, clip_seed, seed, wait=False)
            if outcome is None:
                self.progress("    another process runs it (or what it starts from): back to it at the end")
                put_off.append((index, label))
            else:
                record(index, outcome)
        for index, label in put_off:  # in plan order: a parent before the stages after it
            clip_seed, seed, entry = plan[index - 1]
            self.progress(f"{label}: waiting for it")
            record(index, self.run_stage(entry, clip_seed, seed))
        in_plan_order = [run for _, run in sorted(runs, key=lambda item: item[0])]
        return {"rows": build_rows(self.entries, in_plan_order, self.iterations), "runs": in_plan_order}

    def report(self, outcome: dict[str, Any]) -> None:
        if "error" in outcome:
            self.progress(f"    FAILED: {outcome['error']} (log: {outcome['log']})")
        else:
            metrics = " / ".join(f"{outcome['metrics'][k]:.1f}" for k in METRICS)
            self.progress(f"    mIoU / seen / unseen / hIoU {metrics}, training {outcome['train_s']:.0f} s")

    def progress(self, message: str) -> None:
        elapsed = time.perf_counter() - self.start
        self.log(f"{int(elapsed // 60):3d}:{int(elapsed % 60):02d} {message}")


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (n - 1; 0 for one value), min and max."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values), "max": max(values), "n": len(values),
    }


def build_rows(
    entries: dict[str, Entry], runs: Sequence[dict[str, Any]], iterations: Callable[[Entry], list[int]]
) -> list[dict[str, Any]]:
    """One row per entry over its distinct runs (a run shared by several seeds counts once), ranked by
    mean hIoU; failed rows last. `hIoU_vs_reference`: each (pretraining seed, training seed) cell's hIoU
    minus the reference row's of the same pretraining seed (a win must hold in the worst cell)."""
    distinct: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        distinct.setdefault(run["id"], {})[run["run"]] = run
    reference = {
        run["clip_seed"]: run["metrics"]["hIoU"]
        for run in runs if entries[run["id"]].reference and "metrics" in run
    }
    rows = []
    for entry_id, entry in entries.items():
        done = [r for r in distinct.get(entry_id, {}).values() if "metrics" in r]
        failed = [r for r in distinct.get(entry_id, {}).values() if "error" in r]
        row: dict[str, Any] = {
            "method": entry.name, "id": entry_id, "config": entry.config, "trained_on": entry.trained_on,
            "iterations": iterations(entry), "runs": len(done),
        }
        if done:
            row.update({k: spread([r["metrics"][k] for r in done]) for k in METRICS})
            row["train_s"] = spread([r["train_s_chain"] for r in done])
            row["prepare_s"] = spread([r["prepare_s"] for r in done])
            row["inference_s_per_image"] = spread([r["inference_s_per_image"] for r in done])
            margins = [  # every (pretraining seed, training seed) cell, a shared run in each of its cells
                r["metrics"]["hIoU"] - reference[r["clip_seed"]]
                for r in runs if r["id"] == entry_id and "metrics" in r and r["clip_seed"] in reference
            ]
            if margins and not entry.reference:
                row["hIoU_vs_reference"] = spread(margins)
        if failed:
            row["failed"] = [{"run": r["run"], "error": r["error"], "log": r["log"]} for r in failed]
        rows.append(row)
    return sorted(rows, key=lambda r: (not r["runs"], -r["hIoU"]["mean"] if r["runs"] else 0.0))


def _cell(stat: dict[str, float] | None, digits: int = 1) -> str:
    if stat is None:
        return "–"
    if stat["n"] == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def to_markdown(report: dict[str, Any]) -> str:
    """The table: mean ± sample std over the distinct runs (n), failures with their reason."""
    header = (
        "| method (toy config) | trained on | iterations | mIoU | seen | unseen | hIoU | hIoU − baseline (worst run) "
        "| training s | inference s/img | runs |"
    )
    lines = [
        f"Toy-world leaderboard, {report['date']}, commit {report['commit']}:",
        f"`{report['command']}`", "",
        f"{report['spread']}", "",
    ]
    if report.get("smoke_max_iter") is not None:
        cap = report["smoke_max_iter"]
        lines += [f"SMOKE MODE: every stage capped at {cap} iterations; the numbers mean nothing.", ""]
    lines += [header, "|" + " --- |" * 3 + " ---: |" * 8]
    for row in report["rows"]:
        margin = row.get("hIoU_vs_reference")
        cells = [
            f"{row['method']} (`{row['config']}`)", row["trained_on"],
            " + ".join(str(i) for i in row["iterations"]) or "0",
            *(_cell(row.get(k)) for k in METRICS),
            "–" if margin is None else f"{margin['min']:+.1f}",
            _cell(row.get("train_s"), 0), _cell(row.get("inference_s_per_image"), 4), str(row["runs"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    failures = [(row, f) for row in report["rows"] for f in row.get("failed", [])]
    if failures:
        lines += ["", "Failed runs:"]
        lines += [f"- {row['method']} ({f['run']}): {f['error']} (log: {f['log']})" for row, f in failures]
    return "\n".join(lines) + "\n"


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    commit = done.stdout.strip() if done.returncode == 0 else "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                           capture_output=True, text=True).stdout.strip()
    return commit + (" (with uncommitted changes)" if dirty else "")


def write_report(output: Path, result: dict[str, Any], command: str, options: Options) -> dict[str, Any]:
    """leaderboard.json (rows + metadata), leaderboard_runs.json (every run) and leaderboard.md."""
    report = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": git_commit(),
        "clip_seeds": list(options.clip_seeds), "seeds": list(options.seeds),
        "smoke_max_iter": options.max_iter,
        "spread": "Cells: mean ± sample standard deviation (n - 1) over the distinct runs of a row "
                  "(pretraining seeds x training seeds; a stage that depends on neither runs once); "
                  "min / max per metric in leaderboard.json. Training s: wall seconds of the row's "
                  "training stages (its own and those it starts from); inference s/img: wall seconds "
                  "of the toy_val evaluation / images.",
        "rows": result["rows"],
    }
    write_json_atomic(output / "leaderboard.json", report)
    provenance = {k: report[k] for k in ("command", "date", "commit", "clip_seeds", "seeds", "smoke_max_iter")}
    write_json_atomic(output / "leaderboard_runs.json", provenance | {"runs": result["runs"]})
    (output / "leaderboard.md").write_text(to_markdown(report))
    return report


def any_failed(rows: Iterable[dict[str, Any]]) -> bool:
    return any(row.get("failed") for row in rows)


__all__ = [
    "Entry", "Leaderboard", "Options", "Prepare", "any_failed", "build_rows", "discover", "parse_entry",
    "select", "spread", "to_markdown", "write_report",
]
