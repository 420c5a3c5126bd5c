"""Every published Cascade-CLIP LazyConfig instantiates (at tiny width) with the official settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import instantiate

from ovseg_d2.data.vocab import load_vocabulary, unseen_classes
from ovseg_d2.engine import build_model, load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "cascade_clip"
# config -> (prompt tokens, training classes, transductive vocabulary or None, test dataset, max_iter)
PUBLISHED = {
    "cascade_clip_vitb16_512_coco171": (50, 156, None, "ovseg_coco_stuff171_val", 80000),
    "cascade_clip_vitb16_512_coco171_st": (50, 171, "coco_stuff171", "ovseg_coco_stuff171_val", 40000),
    "cascade_clip_vitb16_512_pc59": (35, 49, None, "ovseg_pc59_val", 40000),
    "cascade_clip_vitb16_512_pc59_st": (35, 59, "pc59", "ovseg_pc59_val", 20000),
    "cascade_clip_vitb16_512_voc20": (10, 15, None, "ovseg_voc20_val", 20000),
    "cascade_clip_vitb16_512_voc20_st": (10, 20, "voc20", "ovseg_voc20_val", 10000),
    "cascade_clip_vitb16_512_coco171_to_voc20": (50, 156, None, "ovseg_voc20_val", 80000),
    "cascade_clip_vitb16_512_coco171_to_pc59": (50, 156, None, "ovseg_pc59_val", 80000),
}
FILES = {"coco_multi.npy": "coco_stuff171", "context-59_multi.npy": "pc59", "voc12_single.npy": "voc20"}


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory) -> Path:
    """Stand-ins for the official fp16 embedding files (rows in dataset order, width 32)."""
    root = tmp_path_factory.mktemp("cascade_text")
    for name, vocab in FILES.items():
        rows = torch.nn.functional.normalize(torch.randn(len(load_vocabulary(vocab)), 32), dim=-1)
        np.save(root / name, rows.half().numpy())
    return root


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_config_builds(name, text_dir):
    tokens, num_train, transductive, test_set, max_iter = PUBLISHED[name]
    cfg = load_config(str(CONFIGS / f"{name}.py"), ["model.clip_model=tiny-cascade-clip"])
    cfg.model.text_classifier.path = str(text_dir / Path(cfg.model.text_classifier.path).name)
    for key, entry in (cfg.model.get("test_text_classifiers") or {}).items():
        if key != "_target_":
            entry.path = str(text_dir / Path(entry.path).name)
    model = build_model(cfg)
    assert model.backbone.prompts.prompt_embeddings.shape[1] == tokens
    assert len(model.train_vocabulary) == num_train
    assert cfg.dataloader.test_datasets == [test_set]
    assert (model.inference.window, model.inference.stride) == (512, 426)
    assert cfg.dataloader.evaluator["metric_convention"] == "mmseg"
    assert cfg.train.max_iter == max_iter
    if transductive:
        assert model.unseen_train_classes == tuple(unseen_classes(transductive)) and model.seen_bias == 0.0
        assert cfg.train.init_checkpoint.endswith(f"model_{max_iter - 1:07d}.pth")  # half the inductive run
    else:
        assert model.unseen_train_classes is None
        assert model.seen_bias == (0.0 if "_to_" in name else 0.1)
    # The test vocabulary's embeddings come from that dataset's file (cross-dataset: another file).
    model.eval().test_dataset = test_set
    table = model.text_embeddings(model.vocabulary_for(test_set))
    source = (cfg.model.get("test_text_classifiers") or {}).get(test_set, cfg.model.text_classifier)
    expected = torch.from_numpy(np.load(source.path)).float()  # test vocabulary = the file's rows, in order
    torch.testing.assert_close(table, expected, atol=0, rtol=0)
    # mmcv poly: lr(t) = (2e-4 - 1e-6) * (1 - t / T)^0.9 + 1e-6, warmup factor 1 - (1 - t / 1500) * (1 - 1e-6).
    schedule = instantiate(cfg.lr_multiplier)
    assert 2e-4 * schedule(0.0) == pytest.approx(2e-4 * 1e-6, rel=1e-3)
    assert 2e-4 * schedule(750 / max_iter) == pytest.approx(((2e-4 - 1e-6) * (1 - 750 / max_iter) ** 0.9 + 1e-6) * (0.5 + 0.5e-6))
    assert 2e-4 * schedule(0.5) == pytest.approx((2e-4 - 1e-6) * 0.5**0.9 + 1e-6)


def test_trainable_parameters_follow_the_official_rule(text_dir):
    cfg = load_config(str(CONFIGS / "cascade_clip_vitb16_512_voc20.py"), ["model.clip_model=tiny-cascade-clip"])
    cfg.model.text_classifier.path = str(text_dir / "voc12_single.npy")
    model = build_model(cfg)
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"backbone.prompts", "head.nga_weights", "head.query_projs", "head.decoders"}
