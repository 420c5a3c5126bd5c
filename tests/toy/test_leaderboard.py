"""The toy-world leaderboard (tools/run_demo.py --methods, ovseg_d2/data/toy/leaderboard.py):

- discovery finds every method's toy config through its `leaderboard` declaration (and a config added
  later without touching the leaderboard code); configs keep their strict overrides;
- on a 96x96 world of 4 validation images with a random tiny CLIP, a run of real stages (the dense
  baseline as reference, a 2-iteration conv head over two training seeds, an eval-only stage after
  it, a stage that fails and one after the failing one): the failing row says why while the others
  complete; a re-run calls no finished stage again; run.json records what rebuilds each model;
- mean / spread from per-seed numbers given by hand, and the markdown table agrees with the JSON;
- tools/run_demo.py: `--list`, and the tiny CLIP's seed passed the way tools/pretrain_toy_clip.py takes it.
"""
from __future__ import annotations

import importlib.util
import json
import re
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ovseg_d2.engine
from ovseg_d2.data.toy.demo import evaluate_baseline
from ovseg_d2.data.toy.leaderboard import (
    Entry,
    Leaderboard,
    Options,
    build_rows,
    discover,
    order_entries,
    select,
    to_markdown,
    write_report,
)
from ovseg_d2.engine import load_config
from ovseg_d2.utils.locks import exclusive
from tests.toy.demo_world import REPO, demo_environment, write_demo_world

BASELINE = "configs/toy/dense_baseline.py"
CLIP = ("model.clip_weights={clip_weights}",)
ENTRIES = order_entries({
    "floor": Entry(
        id="floor", config=BASELINE, name="floor", trained_on="nothing", eval_only=True, reference=True,
        overrides=("model.head=none", *CLIP, "train.init_checkpoint=none"),
    ),
    "conv": Entry(id="conv", config=BASELINE, name="conv head", trained_on="seen masks", overrides=CLIP),
    "conv_eval": Entry(
        id="conv_eval", config=BASELINE, name="conv head, evaluated again", trained_on="seen masks",
        after="conv", eval_only=True, overrides=(*CLIP, "train.init_checkpoint={parent_checkpoint}"),
    ),
    "broken": Entry(
        id="broken", config=BASELINE, name="broken", trained_on="seen masks",
        overrides=("model.clip_weights={run_dir}/no_such_clip.pt",),
    ),
    "after_broken": Entry(
        id="after_broken", config=BASELINE, name="after broken", trained_on="seen masks", after="broken",
        overrides=CLIP,
    ),
})
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """OUTPUT/toy_world and OUTPUT/clip0/tiny_clip.pt (random tiny CLIP, exported as the pretraining does)."""
    output = tmp_path_factory.mktemp("leaderboard")
    weights = write_demo_world(output, output / "clip0" / "trainer.pth", output / "clip0" / "tiny_clip.pt")
    with demo_environment(output):
        yield SimpleNamespace(output=output, weights=weights)


def _run(output: Path) -> tuple[dict, list[int]]:
    pretrained: list[int] = []
    board = Leaderboard(ENTRIES, Options(output=output, seeds=SEEDS, max_iter=2), log=lambda message: None)
    return board.run(pretrained.append), pretrained


@pytest.fixture(scope="module")
def first(world):
    result, pretrained = _run(world.output)
    assert pretrained == [0]
    return SimpleNamespace(result=result, rows={row["config"] + ":" + row["method"]: row for row in result["rows"]},
                           by_name={row["method"]: row for row in result["rows"]})


def test_discovery_finds_every_toy_config() -> None:
    entries = discover()
    assert set(entries) == {
        "toy/dense_baseline", "catseg/catseg_toy", "catseg/catseg_fb_toy", "cascade_clip/cascade_clip_toy",
        "cascade_clip/cascade_clip_toy_st", "tcl/tcl_toy", "ovsegmentor/ovsegmentor_toy_stage1",
        "ovsegmentor/ovsegmentor_toy_stage2", "sazs/sazs_toy", "sazs/sazs_toy_fused",
    }
    assert [e.id for e in entries.values() if e.reference] == ["toy/dense_baseline"]
    assert entries["cascade_clip/cascade_clip_toy_st"].after == "cascade_clip/cascade_clip_toy"
    assert entries["cascade_clip/cascade_clip_toy_st"].checkpoint == "model_0000299.pth"
    assert entries["sazs/sazs_toy_fused"].after == "sazs/sazs_toy" and entries["sazs/sazs_toy_fused"].eval_only
    order = list(entries)
    for entry in entries.values():  # a stage runs after the one it starts from
        assert entry.after is None or order.index(entry.after) < order.index(entry.id)
    assert set(select(entries, "sazs")) == {"sazs/sazs_toy", "sazs/sazs_toy_fused", "toy/dense_baseline"}
    assert set(select(entries, "cascade_clip/cascade_clip_toy_st")) == {
        "cascade_clip/cascade_clip_toy_st", "cascade_clip/cascade_clip_toy", "toy/dense_baseline",
    }
    with pytest.raises(ValueError, match="unknown \\['catsge'\\]"):
        select(entries, "catsge")


def test_a_config_added_later_is_discovered(tmp_path: Path) -> None:
    method = tmp_path / "configs" / "newmethod"
    method.mkdir(parents=True)
    (method / "new_toy.py").write_text(
        'train = dict(max_iter=5)\nleaderboard = dict(name="New", trained_on="seen masks")\n'
    )
    (method / "new_paper.py").write_text("train = dict(max_iter=80000)\n")  # no declaration: not a row
    entries = discover(tmp_path / "configs")
    assert list(entries) == ["newmethod/new_toy"]
    new = entries["newmethod/new_toy"]
    assert (new.name, new.config) == ("New", str(method / "new_toy.py"))
    (method / "new_toy.py").write_text('leaderboard = dict(name="New", trained_on="x", traind_on="y")\n')
    with pytest.raises(ValueError, match=r"new_toy.py: unknown leaderboard keys \['traind_on'\]"):
        discover(tmp_path / "configs")


def test_declaring_configs_keep_strict_overrides() -> None:
    with pytest.raises(Exception, match="max_iter"):
        load_config(str(REPO / "configs/catseg/catseg_toy.py"), ["train.max_iterr=5"])


def test_a_failing_method_gets_its_reason_while_the_others_complete(world, first) -> None:
    rows = first.by_name
    assert [r["method"] for r in first.result["rows"][-2:]] == ["broken", "after broken"]  # failed rows last
    for name in ("broken", "after broken"):
        assert rows[name]["runs"] == 0 and "hIoU" not in rows[name]
    broken = rows["broken"]["failed"]
    assert [f["run"] for f in broken] == ["seed0", "seed1"]  # its overrides name no {clip_*}: any CLIP seed
    assert "no_such_clip.pt" in broken[0]["error"], broken
    log = Path(broken[0]["log"]).read_text()
    assert "Traceback" in log and "no_such_clip.pt" in log
    assert rows["after broken"]["failed"][0]["error"].startswith("not run: broken failed")
    assert not (world.output / "runs/broken/seed0/run.json").exists()
    # the others completed: the floor once for both training seeds, the trained stages once per seed
    assert [rows[name]["runs"] for name in ("floor", "conv head", "conv head, evaluated again")] == [1, 2, 2]
    floor = evaluate_baseline(str(world.weights), world.output / "check_baseline")
    assert rows["floor"]["hIoU"]["mean"] == pytest.approx(floor["hIoU"], abs=1e-9)
    runs = {(r["id"], r["seed"]): r for r in first.result["runs"]}
    for seed in SEEDS:  # the eval-only stage evaluates its parent's final weights of the same seed
        assert runs[("conv_eval", seed)]["metrics"] == runs[("conv", seed)]["metrics"]
        assert runs[("conv_eval", seed)]["train_s_chain"] == runs[("conv", seed)]["train_s"] > 0
    assert rows["conv head"]["iterations"] == [2] and rows["conv head, evaluated again"]["iterations"] == [2]
    assert rows["floor"]["iterations"] == []
    weights = [torch.load(world.output / f"runs/conv/clip0-seed{s}/model_final.pth", weights_only=False) for s in SEEDS]
    assert [w["iteration"] for w in weights] == [1, 1]
    trained = [k for k in weights[0]["model"] if not k.startswith("clip")]
    assert trained and not all(torch.equal(weights[0]["model"][k], weights[1]["model"][k]) for k in trained)  # 2 seeds


def test_run_json_rebuilds_each_finished_stage(world, first) -> None:
    conv = json.loads((world.output / "runs/conv/clip0-seed1/run.json").read_text())
    assert conv == {
        "name": "conv head", "config": BASELINE, "overrides": [f"model.clip_weights={world.weights}"],
        "weights": str(world.output / "runs/conv/clip0-seed1/model_final.pth"), "dataset": "toy_val",
    }
    floor = json.loads((world.output / "runs/floor/clip0/run.json").read_text())
    assert floor["weights"] is None and "model.head=none" in floor["overrides"]
    again = json.loads((world.output / "runs/conv_eval/clip0-seed1/run.json").read_text())
    assert again["weights"] == conv["weights"]


def test_rerun_skips_finished_stages(world, first, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"train": 0, "test": 0}
    do_train, do_test = ovseg_d2.engine.do_train, ovseg_d2.engine.do_test

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(ovseg_d2.engine, "do_train", counted("train", do_train))
    monkeypatch.setattr(ovseg_d2.engine, "do_test", counted("test", do_test))
    final = world.output / "runs/conv/clip0-seed0/model_final.pth"
    stamp = final.stat().st_mtime_ns
    result, pretrained = _run(world.output)
    assert pretrained == [0]  # the CLIP callback decides itself (tools/run_demo.py: retrieval.json)
    assert calls == {"train": 2, "test": 0}  # only the failing stage, once per seed, is tried again
    assert final.stat().st_mtime_ns == stamp
    assert result["rows"] == first.result["rows"]
    # A stage whose evaluation is missing is evaluated again, not retrained.
    (world.output / "runs/conv/clip0-seed1/evaluation.json").unlink()
    calls.update(train=0, test=0)
    result, _ = _run(world.output)
    assert calls == {"train": 2, "test": 1}
    runs = {(r["id"], r["run"]): r for r in result["runs"]}
    for before in first.result["runs"]:  # the same weights give the same numbers (only the timing moves)
        after = runs[(before["id"], before["run"])]
        assert after.get("metrics") == before.get("metrics") and after.get("train_s") == before.get("train_s")


def test_a_run_of_another_recipe_is_reported_never_reused(world, first) -> None:
    final = world.output / "runs/conv/clip0-seed0/model_final.pth"
    stamp = final.stat().st_mtime_ns
    longer = Leaderboard(ENTRIES, Options(output=world.output, seeds=SEEDS, max_iter=3), log=lambda message: None)
    rows = {row["method"]: row for row in longer.run(lambda clip_seed: None)["rows"]}
    error = rows["conv head"]["failed"][0]["error"]
    assert "runs/conv/clip0-seed0 holds a run of another recipe (max_iter changed since" in error, error
    assert rows["conv head, evaluated again"]["failed"][0]["error"].startswith("not run: conv failed")
    assert rows["floor"]["runs"] == 1 and "failed" not in rows["floor"]  # eval-only: no iterations to change
    changed = dict(ENTRIES, conv=Entry(
        id="conv", config=BASELINE, name="conv head", trained_on="seen masks", overrides=(*CLIP, "optimizer.lr=0.5"),
    ))
    board = Leaderboard(changed, Options(output=world.output, seeds=SEEDS, max_iter=2), log=lambda message: None)
    rows = {row["method"]: row for row in board.run(lambda clip_seed: None)["rows"]}
    assert "holds a run of another recipe (overrides changed since" in rows["conv head"]["failed"][0]["error"]
    recorded = json.loads((world.output / "runs/conv/clip0-seed0/recipe.json").read_text())
    assert recorded["max_iter"] == 2 and recorded["overrides"] == list(CLIP) and "{repo}" in recorded["config"]
    assert final.stat().st_mtime_ns == stamp  # nothing overwritten
    # the original recipe still finds its runs
    again = {(r["id"], r["run"]): r.get("metrics") for r in _run(world.output)[0]["runs"]}
    assert again == {(r["id"], r["run"]): r.get("metrics") for r in first.result["runs"]}


def test_a_run_recorded_before_recipes_is_reported(world, first, tmp_path: Path) -> None:
    (world.output / "runs/conv/clip0-seed1/recipe.json").rename(tmp_path / "recipe.json")
    try:
        rows = {row["method"]: row for row in _run(world.output)[0]["rows"]}
        error = rows["conv head"]["failed"][0]["error"]
        assert "runs/conv/clip0-seed1 holds a run recorded before recipe.json existed (training.json" in error, error
    finally:
        (tmp_path / "recipe.json").rename(world.output / "runs/conv/clip0-seed1/recipe.json")


@pytest.mark.timeout(300)
def test_a_stage_another_process_holds_is_taken_last(world, first) -> None:
    """Another process holds conv's seed-0 run: the leaderboard goes on with the rest of its plan (the stage
    after that run waits too), then waits for it and reads what that process left."""
    messages: list[str] = []
    with ExitStack() as other_process:
        assert other_process.enter_context(exclusive(world.output / "runs/conv/.clip0-seed0.lock", wait=False))

        def log(message: str) -> None:
            messages.append(message)
            if message.endswith("waiting for it"):
                other_process.close()  # it finishes

        board = Leaderboard(ENTRIES, Options(output=world.output, seeds=SEEDS, max_iter=2), log=log)
        result = board.run(lambda clip_seed: None)
    labels = [match.group(1) for match in (re.match(r"\s*\d+:\d\d (\[.*)", m) for m in messages) if match]
    put_off = [
        "[2/10] conv head (conv, clip seed 0, seed 0)",
        "[3/10] conv head, evaluated again (conv_eval, clip seed 0, seed 0)",
    ]
    # the whole plan first (the two put off among it), then the two
    assert [label.split("]")[0] for label in labels[:10]] == [f"[{i}/10" for i in range(1, 11)], labels
    assert labels[10:] == [f"{label}: waiting for it" for label in put_off], labels
    assert sum("another process runs it" in m for m in messages) == 2
    assert [(r["id"], r["run"], r.get("metrics")) for r in result["runs"]] == [
        (r["id"], r["run"], r.get("metrics")) for r in first.result["runs"]
    ]


def _hand_runs() -> tuple[dict[str, Entry], list[dict]]:
    entries = order_entries({
        "base": Entry(id="base", config="b.py", name="base", trained_on="nothing", eval_only=True, reference=True),
        "m": Entry(id="m", config="m.py", name="method", trained_on="seen masks"),
    })

    def run(entry_id, clip_seed, seed, key, h, train_s=10.0):
        metrics = {"mIoU": h + 1, "mIoU-seen": h + 2, "mIoU-unseen": h - 1, "hIoU": h}
        return {"id": entry_id, "clip_seed": clip_seed, "seed": seed, "run": key, "metrics": metrics,
                "train_s": train_s, "train_s_chain": train_s, "prepare_s": 0.0, "inference_s_per_image": 0.5,
                "log": "x"}

    runs = []
    for clip_seed, base_h in ((0, 1.0), (1, 3.0)):
        for seed, h in zip((0, 1), ((2.0, 4.0), (9.0, 5.0))[clip_seed]):
            # the baseline's run serves both training seeds of its pretraining seed
            runs.append(run("base", clip_seed, seed, f"clip{clip_seed}", base_h, 0.0))
            runs.append(run("m", clip_seed, seed, f"clip{clip_seed}-seed{seed}", h))
    return entries, runs


def test_mean_and_spread_from_per_seed_numbers() -> None:
    entries, runs = _hand_runs()
    rows = {row["method"]: row for row in build_rows(entries, runs, lambda entry: [7])}
    assert [r["method"] for r in build_rows(entries, runs, lambda entry: [7])] == ["method", "base"]
    method = rows["method"]
    assert method["runs"] == 4
    # hIoU 2, 4, 9, 5: mean 5, sample variance (9 + 1 + 16 + 0) / 3
    assert method["hIoU"] == pytest.approx({"mean": 5.0, "std": (26 / 3) ** 0.5, "min": 2.0, "max": 9.0, "n": 4})
    assert method["mIoU-unseen"]["mean"] == pytest.approx(4.0)
    base = rows["base"]
    assert base["runs"] == 2  # one run per pretraining seed, counted once
    assert base["hIoU"] == pytest.approx({"mean": 2.0, "std": 2 ** 0.5, "min": 1.0, "max": 3.0, "n": 2})
    assert "hIoU_vs_reference" not in base
    # margins per cell: 2-1, 4-1, 9-3, 5-3
    assert method["hIoU_vs_reference"] == pytest.approx(
        {"mean": 3.0, "std": (14 / 3) ** 0.5, "min": 1.0, "max": 6.0, "n": 4}
    )


def test_markdown_and_json_agree(tmp_path: Path) -> None:
    entries, runs = _hand_runs()
    runs.append({"id": "m", "clip_seed": 2, "seed": 0, "run": "clip2-seed0", "error": "ValueError: bad", "log": "/l"})
    result = {"rows": build_rows(entries, runs, lambda entry: [] if entry.eval_only else [300, 300]), "runs": runs}
    report = write_report(tmp_path, result, "python tools/run_demo.py --methods all", Options(output=tmp_path))
    saved = json.loads((tmp_path / "leaderboard.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(report["rows"]))
    assert json.loads((tmp_path / "leaderboard_runs.json").read_text())["runs"] == runs
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert markdown == to_markdown(saved)
    assert "`python tools/run_demo.py --methods all`" in markdown and saved["commit"] in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(table) == len(saved["rows"])
    for line, row in zip(table, saved["rows"]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == f"{row['method']} (`{row['config']}`)"
        for cell, key in zip(cells[3:7], ("mIoU", "mIoU-seen", "mIoU-unseen", "hIoU")):
            mean, _, std = cell.partition(" ± ")
            assert float(mean) == pytest.approx(row[key]["mean"], abs=0.05)
            assert float(std or 0) == pytest.approx(row[key]["std"], abs=0.05)
        assert cells[-1] == str(row["runs"])
    assert table[0].split("|")[3].strip() == "300 + 300"
    assert re.search(r"- method \(clip2-seed0\): ValueError: bad \(log: /l\)", markdown)


def _run_demo_tool():
    spec = importlib.util.spec_from_file_location("run_demo", REPO / "tools/run_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_list_prints_every_discovered_method(capsys: pytest.CaptureFixture) -> None:
    assert _run_demo_tool().main(["--list"]) == 0
    printed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == list(discover())


def test_pretraining_seed_reaches_the_script(tmp_path: Path) -> None:
    run_demo = _run_demo_tool()
    script = [run_demo.sys.executable, str(REPO / "tools/pretrain_toy_clip.py"), "--output", str(tmp_path)]
    assert run_demo.pretrain_command(tmp_path) == script  # `make demo`: unchanged
    assert run_demo.pretrain_command(tmp_path, 2, pretrain=True, max_iter=3) == [
        *script, "--clip-seed", "2", "--pretrain", "train.max_iter=3",
    ]
    # The script accepts what the command passes.
    usage = run_demo.subprocess.run([*script[:2], "--help"], capture_output=True, text=True, check=True).stdout
    assert "--clip-seed" in usage and "--pretrain" in usage


def test_pretraining_seeds_share_one_copy_of_each_world(tmp_path: Path) -> None:
    """Every clip<N> folder reaches the leaderboard's toy world and, when retraining, its pretraining
    world through links: a file written through one seed's folder is seen through the other's."""
    link = _run_demo_tool().link_shared_worlds
    link(tmp_path / "clip0", pretrain=False)
    assert not (tmp_path / "clip0/clip_world").exists()
    for seed in (0, 1):
        link(tmp_path / f"clip{seed}", pretrain=True)
        link(tmp_path / f"clip{seed}", pretrain=True)  # a resumed run finds the links in place
    for name in ("toy_world", "clip_world"):
        (tmp_path / "clip0" / name / "marker").write_text(name)
        assert (tmp_path / "clip1" / name / "marker").read_text() == name
        assert (tmp_path / name / "marker").exists()
