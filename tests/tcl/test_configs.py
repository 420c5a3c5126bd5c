"""The TCL LazyConfigs build (ViT-B/16 configs with the tiny golden CLIP in place of ViT-B/16) and
hold the official settings (spec tcl.md 3.3, 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detectron2.config import instantiate

from ovseg_d2.engine import build_model, load_config

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.clip_model=tiny-tcl", "train.device=cpu"]


def _config(name: str, overrides: list[str] = TINY):
    return load_config(str(REPO / "configs/tcl" / name), overrides)


def test_published_setting_optimizer_and_schedule():
    cfg = _config("tcl_vitb16.py")
    model = build_model(cfg)
    assert model.pamr is not None and model.prior_weight == 0.3
    assert model.inference.window == 448 and model.inference.stride == 224
    assert model.inference.threshold_for("ovseg_voc21_val") == 0.4
    assert len(cfg.dataloader.test_datasets) == 8 and cfg.dataloader.evaluator.metric_convention == "mmseg"
    assert not any(p.requires_grad for p in model.masker_block.parameters())  # decoder-only first stage
    assert model.vocabulary_for("ovseg_pc59_val").entries[49] == "table"  # mmseg's PASCAL-Context name

    cfg.optimizer.model = model
    optimizer = instantiate(cfg.optimizer)
    masker_block = {id(p) for p in model.masker_block.parameters()}
    in_groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert masker_block <= set(in_groups)  # frozen but in the optimizer, for the switch at 30k
    assert in_groups[id(model.masker_block.mlp.c_fc.weight)]["weight_decay"] == 0.05
    assert in_groups[id(model.masker_block.mlp.c_fc.bias)]["weight_decay"] == 0.0
    assert optimizer.defaults["eps"] == 1e-6
    assert cfg.train.hooks[0].iteration == 30000

    schedule = instantiate(cfg.lr_multiplier)
    peak = cfg.optimizer.lr
    # linear warmup from 1e-4 over 15k steps, then cosine over 35k down to lr 1e-5
    assert peak * schedule(0.0) == pytest.approx(7.5e-9)
    assert peak * schedule(15000 / 50000) == pytest.approx(7.5e-5, rel=1e-3)
    assert peak * schedule(32500 / 50000) == pytest.approx((7.5e-5 + 1e-5) / 2, rel=1e-3)
    assert peak * schedule(0.999999) == pytest.approx(1e-5, rel=1e-3)


def test_no_pamr_and_demo_settings():
    nopamr = build_model(_config("tcl_vitb16_nopamr.py"))
    assert nopamr.pamr is None and nopamr.inference.threshold_for("ovseg_coco_object_val") == 0.5
    demo = build_model(_config("tcl_vitb16_demo.py"))
    assert demo.templates == ("{}",) and demo.pamr is None and demo.inference.refine is not None
    assert not demo.inference.sliding


def test_toy_config_trains_on_captions():
    cfg = load_config(str(REPO / "configs/tcl/tcl_toy.py"), ["train.device=cpu"])
    model = build_model(cfg).train()
    images = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    losses = model([{"image": im, "caption": c} for im, c in zip(images, ["a red circle", "two blue squares"])])
    assert set(losses) == {
        "loss_area", "loss_neg_area", "loss_tcl_feature", "loss_tv_image", "loss_tv_mask", "loss_tcl_image"
    }
    with pytest.raises(KeyError, match="caption"):
        model([{"image": images[0]}, {"image": images[1]}])
