"""The pre-CVPR (feature-backbone) CAT-Seg LazyConfigs load, carry the published settings and build."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from PIL import Image

from ovseg_d2.engine import load_config
from ovseg_d2.inference import InferencePolicy
from ovseg_d2.projects.catseg import CATSeg

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "catseg"


# clip_model, resolution, backbone_type, appearance, decoder, frozen: the published R101 setting,
# which the mmseg port's config carries too.
R101_VITB16 = ("ViT-B-16-quickgelu", (384, 384), "ResNet", 1024, (512, 256), False)


@pytest.mark.parametrize(
    "name, clip_model, resolution, backbone_type, appearance, decoder, frozen",
    [
        ("catseg_fb_r101_vitb16_384_coco_stuff.py", *R101_VITB16),
        (
            "catseg_fb_swinb_vitl14_336_coco_stuff.py",
            "ViT-L-14-336-quickgelu",
            (336, 336),
            "SwinTransformer",
            512,
            (256, 128),
            True,
        ),
        ("catseg_fb_r101_vitb16_384_coco_stuff_mmseg.py", *R101_VITB16),
    ],
)
def test_paper_configs(name, clip_model, resolution, backbone_type, appearance, decoder, frozen):
    cfg = load_config(str(CONFIGS / name), [])
    assert cfg.model.clip_model == clip_model and tuple(cfg.model.clip_resolution) == resolution
    assert cfg.dataloader.train.dataset_names == "ovseg_coco_stuff171_train"
    assert len(cfg.dataloader.test_datasets) == 6
    assert cfg.train.max_iter == 80000 and cfg.optimizer.lr == 2e-4
    cfg.model.train_class_names = ["cat", "dog"]
    if backbone_type == "SwinTransformer":
        # Detectron2's Swin calls .item() while building (no meta device): check the published shape in
        # the config, build a 2-block-per-stage Swin-B with a tiny CLIP on CPU.
        swin = cfg.model.feature_backbone
        assert (swin.embed_dim, tuple(swin.depths), tuple(swin.num_heads), swin.window_size) == (
            128,
            (2, 2, 18),
            (4, 8, 16),
            12,
        )
        swin.depths = (2, 2, 2)
        cfg.model.clip_model = "tiny-vit-p16-w64-l3"
        model = instantiate(cfg.model)
    else:
        with torch.device("meta"):
            model = instantiate(cfg.model)
    assert isinstance(model, CATSeg) and type(model.feature_backbone).__name__ == backbone_type
    assert model.aggregator.appearance_proj.in_channels == appearance
    assert tuple(p.in_channels for p in model.aggregator.decoder_guidance_proj) == decoder
    assert model.aggregator.corr_embed.in_channels == 80  # one cost channel per template
    assert model.aggregator.pad_len == 0
    assert not hasattr(model, "tap_upsample")
    assert all(p.requires_grad != frozen for p in model.feature_backbone.parameters())
    trainable_clip = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("clip_")}
    assert trainable_clip and all(n.startswith("clip_image.") for n in trainable_clip)
    assert "clip_image.visual.positional_embedding" in trainable_clip


def test_pipelines_official_and_mmseg(tmp_path: Path):
    official = load_config(str(CONFIGS / "catseg_fb_r101_vitb16_384_coco_stuff.py"), [])
    mmseg = load_config(str(CONFIGS / "catseg_fb_r101_vitb16_384_coco_stuff_mmseg.py"), [])
    for cfg in (official, mmseg):
        cfg.model.train_class_names = ["cat", "dog"]
    with torch.device("meta"):
        a, b = instantiate(official.model), instantiate(mmseg.model)
    assert a.inference == InferencePolicy(resize="squash", size=(640, 640), window=384, stride=256, global_view=True)
    assert a.score_activation == "sigmoid" and not a.aggregator.port_guidance_tiling
    assert b.inference == InferencePolicy(window=384, stride=384, batch_size=1)
    assert b.score_activation == "none" and b.aggregator.port_guidance_tiling
    assert b.aggregator.layers[0].classes.port_class_mlp_identity
    assert official.dataloader.test.mapper.augmentations.min_size == 640  # short side 640, then squash
    # mmseg's test resize happens in the mapper, with OpenCV on the uint8 image: 480x640 -> 512x683
    mapper = instantiate(mmseg.dataloader.test.mapper)
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    resized = torch.from_numpy(cv2.resize(image, (683, 512), interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1)
    Image.fromarray(image).save(tmp_path / "image.png")
    assert torch.equal(mapper({"file_name": str(tmp_path / "image.png")})["image"], resized)
    assert mmseg.dataloader.evaluator.metric_convention == "mmseg"
    assert isinstance(b.aggregator.decoder.dropout, torch.nn.Dropout2d)


def test_mmseg_schedule_is_the_ports_warmup_then_cosine():
    """The port's param_scheduler: mmengine LinearLR(start_factor=0.01, begin=0, end=500), whose chainable
    form reaches factor 1 after end - begin - 1 = 499 steps, then CosineAnnealingLR(T_max=79500, begin=500).
    Iteration t trains with multiplier(t / max_iter) (Detectron2's LRMultiplier)."""
    cfg = load_config(str(CONFIGS / "catseg_fb_r101_vitb16_384_coco_stuff_mmseg.py"), [])
    assert cfg.train.max_iter == 80000
    multiplier = instantiate(cfg.lr_multiplier)
    for t in (0, 1, 250, 498, 499):
        assert multiplier(t / 80000) == pytest.approx(0.01 + 0.99 * t / 499, abs=1e-12)
    for t in (500, 501, 20000, 40250, 79999):
        assert multiplier(t / 80000) == pytest.approx(0.5 * (1 + math.cos(math.pi * (t - 500) / 79500)), abs=1e-12)


def test_toy_config_trains_one_step_and_evaluates():
    cfg = load_config(str(CONFIGS / "catseg_fb_toy.py"), [])
    cfg.model.train_class_names = ["red circle", "blue square", "grass"]
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    batch = [{"image": torch.rand(3, 96, 96) * 255, "sem_seg": torch.randint(0, 3, (96, 96))} for _ in range(2)]
    loss = model(batch)["loss_sem_seg"]
    loss.backward()
    backbone_grads = [p.grad for p in model.feature_backbone.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in backbone_grads)
    assert all(p.grad is None for p in model.clip_text.parameters())
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 96, 96) * 255, "height": 48, "width": 48}])
    assert out[0]["sem_seg"].shape == (3, 48, 48)
