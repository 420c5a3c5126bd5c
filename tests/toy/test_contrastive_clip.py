"""ContrastiveCLIP (training step, eval output), checkpoint export, and toy retrieval evaluation."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import EventStorage
from torch import nn

from ovseg_d2.clip import build_clip
from ovseg_d2.data.toy import CLASS_NAMES, UNSEEN_CLASS_IDS
from ovseg_d2.data.toy.retrieval import evaluate_retrieval
from ovseg_d2.modeling.contrastive_clip import ContrastiveCLIP, export_clip_checkpoint

MICRO_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 4},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CAPTIONS = ["a red circle", "a blue star above a small green cross", "an orange square", "a purple triangle"]


@pytest.fixture()
def micro_clip_json(tmp_path: Path) -> Path:
    path = tmp_path / "micro_clip.json"
    path.write_text(json.dumps(MICRO_CLIP))
    return path


def _batch() -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    return [
        {"image": torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8, generator=gen), "caption": c}
        for c in CAPTIONS
    ]


def test_registered() -> None:
    assert META_ARCH_REGISTRY.get("ContrastiveCLIP") is ContrastiveCLIP


def test_one_step_reduces_the_loss_on_a_fixed_batch(micro_clip_json: Path) -> None:
    torch.manual_seed(0)
    model = ContrastiveCLIP(clip_model=micro_clip_json).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = _batch()
    with EventStorage():
        loss = model(batch)["loss_contrastive"]
        # The CLIP loss written out: mean of image->text and text->image cross-entropy over the batch.
        with torch.no_grad():
            image = model.encode_image([x["image"] for x in batch])
            text = model.encode_text([x["caption"] for x in batch])
            logits = model.clip.logit_scale.exp() * image @ text.T
            target = torch.arange(len(batch))
            expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert model(batch)["loss_contrastive"].item() < loss.item()
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert len(out) == len(batch)
    assert torch.allclose(out[0]["image_embedding"].norm(), torch.tensor(1.0), atol=1e-5)


def test_export_loads_like_released_weights(micro_clip_json: Path, tmp_path: Path) -> None:
    model = ContrastiveCLIP(clip_model=micro_clip_json)
    torch.save({"model": model.state_dict(), "iteration": 0}, tmp_path / "model_final.pth")
    weights = export_clip_checkpoint(tmp_path / "model_final.pth", tmp_path / "clip.pt")
    assert set(torch.load(weights, weights_only=True)) == {"state_dict"}
    clip = build_clip(micro_clip_json, weights=weights)
    for name, value in model.clip.state_dict().items():
        assert torch.equal(clip.state_dict()[name], value), name


class _OracleCLIP(nn.Module):
    """A stand-in CLIP whose k-th encoded image scores class `predictions[k]` highest (the retrieval
    images cycle through the classes, image k showing class k % 30)."""

    def __init__(self, predictions: list[int]) -> None:
        super().__init__()
        self.visual = SimpleNamespace(image_size=16)
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the evaluation a device
        self.predictions, self.seen = predictions, 0

    def encode_text(self, tokens: torch.Tensor, normalize: bool) -> torch.Tensor:
        return torch.eye(len(tokens), len(CLASS_NAMES))

    def encode_image(self, images: torch.Tensor, normalize: bool) -> torch.Tensor:
        picked = self.predictions[self.seen:self.seen + len(images)]
        self.seen += len(images)
        return torch.nn.functional.one_hot(torch.tensor(picked), len(CLASS_NAMES)).float()


def test_retrieval_report_scores_seen_and_unseen_separately(toy_root: Path, toy_config) -> None:
    """Right on every seen-class image, wrong (the next class) on every unseen-class one."""
    n = toy_config.num_retrieval
    truth = [k % len(CLASS_NAMES) for k in range(n)]
    predictions = [c if c not in UNSEEN_CLASS_IDS else (c + 1) % len(CLASS_NAMES) for c in truth]
    tokenizer = lambda texts: torch.zeros(len(texts), 1, dtype=torch.long)  # noqa: E731
    result = evaluate_retrieval(_OracleCLIP(predictions), tokenizer, toy_root, batch_size=7, progress=False)
    num_unseen = sum(c in UNSEEN_CLASS_IDS for c in truth)
    assert num_unseen == 6 and n == 30  # the tiny world shows each class once
    assert result["top1"] == pytest.approx(100 * 24 / 30)
    assert result["top1_seen"] == 100.0 and result["top1_unseen"] == 0.0
    assert result["chance"] == pytest.approx(100 / 30) and result["num_images"] == 30


def test_pretrain_config_trains_and_exports(registered_toy_root: Path, tmp_path: Path) -> None:
    """configs/toy/clip_pretrain.py through the project trainer for two iterations, then export."""
    from ovseg_d2.engine import do_train, load_config

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(
        str(repo / "configs/toy/clip_pretrain.py"),
        [f"dataloader.train.shards={registered_toy_root / 'shards'}", "dataloader.train.total_batch_size=4",
         "train.max_iter=2", "train.device=cpu", f"train.output_dir={tmp_path}", "train.log_period=1"],
    )
    cfg.model.clip_model = str(repo / cfg.model.clip_model)
    do_train(cfg)
    weights = export_clip_checkpoint(tmp_path / "model_final.pth", tmp_path / "tiny_clip.pt")
    clip = build_clip(cfg.model.clip_model, weights=weights)
    assert clip.visual.image_size == (cfg.dataloader.train.mapper.image_size,) * 2
