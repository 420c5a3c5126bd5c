"""The CAT-Seg LazyConfigs load, carry the official recipe and build the model they describe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detectron2.config import instantiate

from ovseg_d2.engine import load_config
from ovseg_d2.projects.catseg import CATSeg

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "catseg"


@pytest.mark.parametrize(
    "name, clip_model, resolution, taps",
    [
        ("catseg_vitb16_384_coco_stuff.py", "ViT-B-16-quickgelu", (384, 384), (3, 7)),
        ("catseg_vitl14_336_coco_stuff.py", "ViT-L-14-336-quickgelu", (336, 336), (7, 15)),
    ],
)
def test_paper_configs(name, clip_model, resolution, taps):
    cfg = load_config(str(CONFIGS / name), [])
    assert cfg.model.clip_model == clip_model
    assert tuple(cfg.model.clip_resolution) == resolution and tuple(cfg.model.tap_blocks) == taps
    assert cfg.dataloader.train.dataset_names == "ovseg_coco_stuff171_train"
    assert cfg.dataloader.train.total_batch_size == 4
    assert len(cfg.dataloader.test_datasets) == 6
    assert cfg.optimizer.lr == 2e-4 and cfg.optimizer.weight_decay == 1e-4
    assert dict(cfg.optimizer.lr_multipliers) == {"clip_image": 0.01, "clip_text": 0.01}
    assert cfg.optimizer.clip_grad_norm == 0.01
    assert cfg.train.max_iter == 80000
    assert cfg.train.ddp.find_unused_parameters  # see test_training_text_embeddings_get_gradients
    assert tuple(cfg.model.train_pooling_size) == (2, 2) and tuple(cfg.model.test_pooling_size) == (1, 1)
    cfg.model.train_class_names = ["cat", "dog"]
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert isinstance(model, CATSeg)
    assert model.clip_resolution == resolution


def test_toy_config_trains_one_step():
    cfg = load_config(str(CONFIGS / "catseg_toy.py"), [])
    cfg.model.train_class_names = ["red circle", "blue square", "grass"]
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    batch = [{"image": torch.rand(3, 96, 96) * 255, "sem_seg": torch.randint(0, 3, (96, 96))}]
    loss = model(batch)["loss_sem_seg"]
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 96, 96) * 255, "height": 48, "width": 48}])
    assert out[0]["sem_seg"].shape == (3, 48, 48)
