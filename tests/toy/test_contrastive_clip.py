"""ContrastiveCLIP (training step, hard negatives, eval output), checkpoint export, and toy retrieval
evaluation."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import EventStorage
from torch import nn

from ovseg_d2.clip import build_clip
from ovseg_d2.data.toy import CLASS_NAMES, SHAPES, UNSEEN_CLASS_IDS
from ovseg_d2.data.toy.captions import AttributeSwap
from ovseg_d2.data.toy.generate import ToyWorldLayout, read_meta
from ovseg_d2.data.toy.retrieval import evaluate_retrieval, evaluate_shape_swap
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


def test_retrieval_report_scores_seen_unseen_shape_and_colour(toy_root: Path, toy_config) -> None:
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
    # The next class has another shape; it has the same colour except after purple cross (24), whose
    # next class is orange circle (25).
    assert result["shape"] == pytest.approx(100 * 24 / 30)
    assert result["colour"] == pytest.approx(100 * 29 / 30)
    assert result["chance"] == pytest.approx(100 / 30) and result["num_images"] == 30


class _ShapeCountCLIP(nn.Module):
    """A stand-in CLIP in shape space: a text embeds as its count of each singular shape word; image
    k embeds as the caption of record k (`sees_shape`) or as zeros (shape-blind). Tokens index `texts`."""

    def __init__(self, captions: list[str], sees_shape: bool) -> None:
        super().__init__()
        self.visual = SimpleNamespace(image_size=16)
        self.anchor = nn.Parameter(torch.zeros(()))
        self.captions, self.sees_shape, self.seen, self.texts = captions, sees_shape, 0, []

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        self.texts.extend(texts)
        return torch.arange(len(self.texts) - len(texts), len(self.texts))

    @staticmethod
    def _counts(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[float(len(re.findall(rf"\b{shape}\b", t))) for shape in SHAPES] for t in texts])

    def encode_text(self, tokens: torch.Tensor, normalize: bool) -> torch.Tensor:
        return F.normalize(self._counts([self.texts[i] for i in tokens.tolist()]), dim=-1)

    def encode_image(self, images: torch.Tensor, normalize: bool) -> torch.Tensor:
        captions = self.captions[self.seen:self.seen + len(images)]
        self.seen += len(images)
        counts = self._counts(captions)
        return F.normalize(counts, dim=-1) if self.sees_shape else torch.zeros_like(counts)


@pytest.mark.parametrize("sees_shape", [True, False])
def test_shape_swap_test_scores_an_image_that_sees_shape_and_one_that_does_not(toy_root: Path, sees_shape: bool):
    """An image that embeds its caption's shapes prefers its caption to every shape-swapped copy; a
    shape-blind one (all scores 0) never does, neither through the mean image."""
    captions = [r["caption"] for r in read_meta(ToyWorldLayout(toy_root), "train")]
    clip = _ShapeCountCLIP(captions, sees_shape)
    result = evaluate_shape_swap(clip, clip.tokenize, toy_root, "train", negatives=3, batch_size=5)
    assert result["num_images"] == len(captions) and result["chance"] == 25.0
    assert result["image"] == (100.0 if sees_shape else 0.0)
    if not sees_shape:
        assert result["mean_image"] == 0.0


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


def test_attribute_swap_changes_one_shape_word() -> None:
    random.seed(0)
    caption = "a red circle above a small blue star, and an orange cross"
    negatives = AttributeSwap(count=20)(caption)
    assert len(negatives) == 20
    for negative in negatives:
        changed = [(a, b) for a, b in zip(caption.split(), negative.split()) if a != b]
        assert len(changed) == 1 and len(negative.split()) == len(caption.split())
        old, new = (w.strip(",") for w in changed[0])
        assert old in SHAPES and new in SHAPES and old != new
    # Over 20 draws every object gets swapped at least once (3 objects, fixed seed).
    words = caption.split()
    swapped_positions = {next(i for i, (a, b) in enumerate(zip(words, n.split())) if a != b) for n in negatives}
    assert swapped_positions == {2, 7, 11}
    with pytest.raises(ValueError, match="names none of"):
        AttributeSwap()("a photo of nothing")


def test_hard_negative_loss_is_the_cross_entropy_against_swapped_captions(micro_clip_json: Path) -> None:
    torch.manual_seed(0)
    # One negative per caption: its first shape word replaced by square (by star if it is a square).
    negatives = {c: [c.replace(w, "square" if w != "square" else "star") for w in SHAPES if w in c][:1]
                 for c in CAPTIONS}
    model = ContrastiveCLIP(clip_model=micro_clip_json, text_negatives=lambda c: negatives[c],
                            hard_negative_weight=0.5).train()
    batch = _batch()
    with EventStorage():
        losses = model(batch)
    with torch.no_grad():
        image = model.encode_image([x["image"] for x in batch])
        positive = model.encode_text(CAPTIONS)
        negative = model.encode_text([negatives[c][0] for c in CAPTIONS])
        scale = model.clip.logit_scale.exp()
        # Two candidates per image, its caption first: CE = log(1 + exp(s * (neg - pos))).
        margin = scale * ((image * negative).sum(1) - (image * positive).sum(1))
        expected = 0.5 * F.softplus(margin).mean()
    assert set(losses) == {"loss_contrastive", "loss_hard_negative"}
    assert losses["loss_hard_negative"].item() == pytest.approx(expected.item(), rel=1e-5)

    model.text_negatives = lambda c: negatives[c] * (1 + (c == CAPTIONS[0]))  # uneven counts
    with EventStorage(), pytest.raises(ValueError, match="same number"):
        model(batch)
