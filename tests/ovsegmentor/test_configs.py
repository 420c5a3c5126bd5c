"""The OVSegmentor LazyConfigs load and build the models of the paper: parameter counts equal those of
the official models (spec section 8) less what the official model builds but never uses."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from PIL import Image

from ovseg_d2.engine import load_config
from ovseg_d2.projects.ovsegmentor import OVSegmentor

from .conftest import TOKENIZER

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ovsegmentor"
BERT_POOLER = 590_592  # built by the official model, never used (the [CLS] state is the feature)
ROBERTA = dict(model_type="roberta", vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
               pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)


def _entity_assign(width: int) -> int:
    """The official entity head's unused assignment module: 4 Linear(width, width)."""
    return 4 * (width * width + width)


@pytest.mark.parametrize(
    "name, text_model, official_total, official_trainable, width",
    [
        # spec 8: stage 1 238,698,633 (all trainable); stage 2 338,751,762 (129,216,394 trainable,
        # of which logit_scale_mask and the entity assign module never get gradients)
        ("ovsegmentor_vitb16_bert_stage1.py", dict(model_type="bert"), 238_698_633, 238_698_633, 768),
        ("ovsegmentor_vitb16_bert_stage2.py", dict(model_type="bert"), 338_751_762 - 1, 129_216_394 - 1, 768),
        ("ovsegmentor_vits16_roberta_stage1.py", ROBERTA, 163_812_297, 163_812_297, 384),
    ],
)
def test_paper_configs_build_the_official_architecture(name, text_model, official_total, official_trainable, width):
    cfg = load_config(str(CONFIGS / name), [])
    cfg.model.text_model = text_model  # the pretrained folders are not in the repository
    cfg.model.tokenizer = str(TOKENIZER)
    cfg.model.image_weights = None
    cfg.model.sync_batchnorm = False
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert isinstance(model, OVSegmentor)
    unused = BERT_POOLER + _entity_assign(width)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert total == official_total - unused
    assert trainable == official_trainable - _entity_assign(width) - (0 if "stage2" in name else BERT_POOLER)


def test_stage2_starts_from_a_stage1_checkpoint(tmp_path: Path) -> None:
    """Stage 2 loads stage 1's weights leniently (no momentum keys) and syncs its momentum encoder
    to them at the first step."""
    cfg = load_config(str(CONFIGS / "ovsegmentor_toy_stage2.py"), [])
    stage1 = instantiate(load_config(str(CONFIGS / "ovsegmentor_toy_stage1.py"), []).model)
    stage2 = instantiate(cfg.model)
    result = stage2.load_state_dict(stage1.state_dict(), strict=False)
    assert sorted({k.split(".")[0] for k in result.missing_keys}) == ["momentum_encoder", "momentum_synced"]
    assert not result.unexpected_keys
    stage2.before_step()
    for key, value in stage1.image_encoder.state_dict().items():
        assert torch.equal(stage2.momentum_encoder.state_dict()[key], value), key


@pytest.mark.parametrize("name", ["ovsegmentor_vitb16_bert_stage1.py", "ovsegmentor_vitb16_bert_stage2.py"])
def test_test_pipeline_is_mmseg_resize_then_slide(name: str, tmp_path: Path) -> None:
    """Spec: mmseg's test Resize(2048, 448) keep-ratio (OpenCV bilinear on the uint8 image) in the test
    mapper, then slide 448 / 224 on the resized image (no second resize in the model)."""
    cfg = load_config(str(CONFIGS / name), [])
    policy = instantiate(cfg.model.inference)
    assert (policy.resize, policy.window, policy.stride, policy.global_view) == ("none", 448, 224, False)
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "image.png")
    mapped = instantiate(cfg.dataloader.test.mapper)({"file_name": str(tmp_path / "image.png")})["image"]
    # factor min(2048 / 640, 448 / 480): 480 x 640 -> 448 x int(597.33 + 0.5)
    expected = cv2.resize(image, (597, 448), interpolation=cv2.INTER_LINEAR)
    assert torch.equal(mapped, torch.from_numpy(expected).permute(2, 0, 1))
