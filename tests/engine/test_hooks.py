"""The trainer's hooks (ovseg_d2.engine.hooks) in real `do_train` runs: config hooks, model-step
callbacks, EMA, the trainable schedule in 1 and 2 CPU processes, best checkpoint by a metric, and the
toy two-stage recipe (stage 2 starts from stage 1's best weights)."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig
from detectron2.engine import launch

from ovseg_d2.engine import TrainableSchedule, do_train, load_config, load_model_weights
from ovseg_d2.engine import train_loop

from tests.engine import _tiny_training as tiny

REPO = Path(__file__).resolve().parents[2]


def test_model_step_callbacks_wrap_every_step(tmp_path: Path) -> None:
    model = do_train(tiny.tiny_config(str(tmp_path), max_iter=3))
    assert model.step_calls == ["before", 0, "before", 1, "before", 2]


def test_config_hook_must_be_a_hook(tmp_path: Path) -> None:
    cfg = tiny.tiny_config(str(tmp_path), max_iter=1)
    cfg.train.hooks.append(L(torch.nn.Identity)())
    with pytest.raises(TypeError, match=r"train.hooks\[1\] built a Identity, not a detectron2 HookBase"):
        do_train(cfg)


def test_trainable_schedule_unfreezes_at_its_iteration(tmp_path: Path) -> None:
    cfg = tiny.tiny_config(str(tmp_path), max_iter=4, unfreeze_later=(r"^body\.",))
    cfg.train.hooks.append(L(TrainableSchedule)(iteration=2, trainable=[r"^body\."]))
    do_train(cfg)
    record = tiny.RECORDERS[-1]
    body = [step["body.weight"] for step in record.after_steps]
    head = [step["head.weight"] for step in record.after_steps]
    # steps 0 and 1 leave the frozen body alone, steps 2 and 3 train it; the head trains throughout
    assert torch.equal(body[0], record.initial["body.weight"]) and torch.equal(body[1], body[0])
    assert not torch.equal(body[2], body[1]) and not torch.equal(body[3], body[2])
    assert not torch.equal(head[0], record.initial["head.weight"])


def test_trainable_schedule_needs_its_parameters_in_the_optimizer(tmp_path: Path) -> None:
    cfg = tiny.tiny_config(str(tmp_path), max_iter=2)  # no optimizer.unfreeze_later
    cfg.train.hooks.append(L(TrainableSchedule)(iteration=1, trainable=[r"^body\."]))
    with pytest.raises(ValueError, match=r"not in the optimizer: \['body.bias', 'body.weight'\].*unfreeze_later"):
        do_train(cfg)


@pytest.mark.timeout(300)
def test_trainable_schedule_in_two_processes_keeps_ranks_identical(tmp_path: Path) -> None:
    # Each process sees different data: without a DDP re-wrap at the switch, the newly trainable
    # body would be updated with each process's own gradient and the copies would differ.
    launch(tiny.train_with_schedule_and_save, 2, dist_url="auto", args=(str(tmp_path), 4, 2))
    rank0 = torch.load(tmp_path / "rank0.pth")
    rank1 = torch.load(tmp_path / "rank1.pth")
    for key in ("body.weight", "body.bias", "head.weight"):
        torch.testing.assert_close(rank0["final"][key], rank1["final"][key], rtol=0, atol=0, msg=key)
    assert not torch.equal(rank0["final"]["body.weight"], rank0["initial"]["body.weight"])


def test_ema_is_averaged_checkpointed_and_evaluated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evaluated: list[torch.Tensor] = []

    def fake_test(cfg, model) -> OrderedDict:
        evaluated.append(model.head.weight.detach().clone())
        return OrderedDict()

    monkeypatch.setattr(train_loop, "do_test", fake_test)
    cfg = tiny.tiny_config(str(tmp_path), max_iter=3)
    cfg.train.ema = dict(enabled=True, decay=0.75)
    model = do_train(cfg)
    record = tiny.RECORDERS[-1]
    expected = record.initial["head.weight"]
    for step in record.after_steps:
        expected = 0.75 * expected + 0.25 * step["head.weight"]
    # evaluation (after training) saw the average; the model keeps its own weights afterwards
    assert len(evaluated) == 1
    torch.testing.assert_close(evaluated[0], expected)
    torch.testing.assert_close(model.head.weight, record.after_steps[-1]["head.weight"], rtol=0, atol=0)
    # the final checkpoint carries the average, and loading it for evaluation applies it
    saved = torch.load(tmp_path / "model_final.pth", weights_only=False)
    torch.testing.assert_close(saved["model_ema"]["weights"]["head.weight"], expected)
    fresh = tiny.TinyRegressor()
    load_model_weights(fresh, str(tmp_path / "model_final.pth"))
    torch.testing.assert_close(fresh.head.weight, expected)
    torch.testing.assert_close(fresh.body.weight, record.initial["body.weight"])  # frozen: as trained


def _scripted_metrics(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> None:
    remaining = list(values)

    def fake_test(cfg, model) -> OrderedDict:
        return OrderedDict(toy_val={"sem_seg": {"mIoU": remaining.pop(0)}})

    monkeypatch.setattr(train_loop, "do_test", fake_test)


def test_best_checkpoint_keeps_the_best_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # evaluations after iterations 0, 1, 2 (eval_period 1) and 3 (end of training): best is the 2nd
    _scripted_metrics(monkeypatch, [10.0, 30.0, 20.0, 25.0])
    cfg = tiny.tiny_config(str(tmp_path), max_iter=4)
    cfg.train.eval_period = 1
    cfg.dataloader.test_datasets = ["toy_val"]
    cfg.train.best_metric = dict(name="toy_val/sem_seg/mIoU", mode="max")
    do_train(cfg)
    best = torch.load(tmp_path / "model_best.pth", weights_only=False)
    assert best["iteration"] == 1
    weights_after_iter1 = tiny.RECORDERS[-1].after_steps[1]
    torch.testing.assert_close(best["model"]["head.weight"], weights_after_iter1["head.weight"], rtol=0, atol=0)


def test_best_checkpoint_names_the_available_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _scripted_metrics(monkeypatch, [10.0])
    cfg = tiny.tiny_config(str(tmp_path), max_iter=1)
    cfg.dataloader.test_datasets = ["toy_val"]
    cfg.train.best_metric = dict(name="toy_val/sem_seg/miou", mode="max")
    with pytest.raises(KeyError, match=r"toy_val/sem_seg/miou.*available: .*'toy_val/sem_seg/mIoU'"):
        do_train(cfg)
    cfg.train.best_metric = dict(name="ade/sem_seg/mIoU", mode="max")
    with pytest.raises(ValueError, match=r"one of dataloader.test_datasets=\['toy_val'\]"):
        do_train(cfg)


STAGE1 = REPO / "configs" / "toy" / "dense_baseline_stage1.py"
STAGE2 = REPO / "configs" / "toy" / "dense_baseline_stage2.py"


def test_stage2_config_starts_from_stage1_best() -> None:
    stage1, stage2 = LazyConfig.load(str(STAGE1)), LazyConfig.load(str(STAGE2))
    assert stage1.train.best_metric.name == "toy_val/sem_seg/mIoU"
    assert stage2.train.init_checkpoint == f"{stage1.train.output_dir}/model_best.pth"


@pytest.mark.timeout(300)
def test_two_stage_recipe_loads_stage1_best_weights(
    voc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_baseline_overrides: list[str]
) -> None:
    import ovseg_d2.data  # noqa: F401  (registers the datasets)

    monkeypatch.setenv("DETECTRON2_DATASETS", str(voc_root))
    common = tiny_baseline_overrides + ["train.checkpointer.period=100"]
    stage1 = load_config(str(STAGE1), common + [f"train.output_dir={tmp_path / 's1'}", "train.max_iter=3",
                                                "train.eval_period=1",
                                                "train.best_metric.name=ovseg_voc20_val/sem_seg/mIoU"])
    do_train(stage1)
    best = torch.load(tmp_path / "s1" / "model_best.pth", weights_only=False)["model"]

    stage2 = load_config(str(STAGE2), common + [f"train.output_dir={tmp_path / 's2'}", "train.max_iter=1",
                                                f"train.init_checkpoint={tmp_path / 's1' / 'model_best.pth'}"])
    stage2.train.hooks = [L(tiny.RecordWeights)()]
    do_train(stage2)
    start = tiny.RECORDERS[-1].initial
    for key in ("head.0.weight", "head.2.weight", "logit_scale"):
        torch.testing.assert_close(start[key], best[key], rtol=0, atol=0, msg=key)
