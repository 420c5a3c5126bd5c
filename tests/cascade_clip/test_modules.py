"""Unit tests of the Cascade-CLIP pieces that the golden fixture does not isolate."""

from __future__ import annotations

import pytest
import torch

from ovseg_d2.modeling import PrecomputedTextClassifier, Vocabulary, export_text_embeddings
from ovseg_d2.projects.cascade_clip import CascadeCLIP, DeepVisualPrompts, focal_dice_loss, pseudo_label_unseen
from ovseg_d2.projects.cascade_clip.head import AttentionLogits

TINY = dict(clip_model="tiny-cascade-clip", image_size=64, num_prompt_tokens=3, decoder_heads=4, train_crop_size=(64, 64))


def test_prompts_are_inserted_then_replaced_before_every_block():
    torch.manual_seed(0)
    prompts = DeepVisualPrompts(width=8, num_tokens=2, num_blocks=3, patch_size=4, dropout=0.0)
    x = torch.randn(1, 1 + 5, 8)  # class token + 5 patches
    y = prompts.pre_block(0, x)
    assert y.shape == (1, 8, 8)
    torch.testing.assert_close(y[:, 1:3], prompts.proj(prompts.prompt_embeddings))
    torch.testing.assert_close(torch.cat([y[:, :1], y[:, 3:]], 1), x)
    z = prompts.pre_block(2, y + 1)  # block 2 replaces the prompt outputs of block 1 by deep table 1
    assert z.shape == y.shape
    torch.testing.assert_close(z[:, 1:3], prompts.proj(prompts.deep_prompt_embeddings[1])[None])
    torch.testing.assert_close(z[:, 3:], y[:, 3:] + 1)


def test_doubled_class_embedding_is_a_switch():
    torch.manual_seed(0)
    single = CascadeCLIP(train_class_names=["a", "b"], **TINY).backbone.tower
    double = CascadeCLIP(train_class_names=["a", "b"], double_class_embedding=True, **TINY).backbone.tower
    double.load_state_dict(single.state_dict())
    images = torch.randn(1, 3, 64, 64)
    pre_norm = single.visual.ln_pre
    single.visual.ln_pre = double.visual.ln_pre = torch.nn.Identity()
    cls = single.visual.class_embedding
    torch.testing.assert_close(double.embed(images)[:, 0] - single.embed(images)[:, 0], cls[None])
    torch.testing.assert_close(double.embed(images)[:, 1:], single.embed(images)[:, 1:])
    single.visual.ln_pre = double.visual.ln_pre = pre_norm


def test_attention_logits_are_the_head_mean_of_scaled_products():
    torch.manual_seed(0)
    layer = AttentionLogits(dim=16, heads=4)
    q, m = torch.randn(2, 3, 16), torch.randn(2, 7, 16)
    qh = layer.q(q).view(2, 3, 4, 4).transpose(1, 2)
    kh = layer.k(m).view(2, 7, 4, 4).transpose(1, 2)
    expected = (qh @ kh.transpose(-1, -2) * 4**-0.5).mean(dim=1)
    torch.testing.assert_close(layer(q, m), expected)


def test_focal_counts_ignored_pixels_as_negatives_and_dice_only_present_classes():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 4)
    target = torch.full((1, 4, 4), 255)
    target[0, :2] = 1
    base = focal_dice_loss(logits, target)
    moved = logits.clone()
    moved[0, 0, 3, 3] += 3.0  # an ignored pixel of a class absent from the image
    changed = focal_dice_loss(moved, target)
    assert changed["loss_focal"] > base["loss_focal"]
    torch.testing.assert_close(changed["loss_dice"], base["loss_dice"])  # class 0 is not present
    with pytest.raises(ValueError, match="outside"):
        focal_dice_loss(logits, torch.full((1, 4, 4), 3))


def test_pseudo_labels_take_the_best_unseen_class_on_unseen_pixels_only():
    logits = torch.tensor([[5.0, 1.0, 2.0], [5.0, 3.0, 2.0]]).T.reshape(1, 3, 1, 2)  # channels x 2 pixels
    target = torch.tensor([[[1, 0]]])  # pixel 0 annotated with unseen 1, pixel 1 with seen 0
    out = pseudo_label_unseen(logits, target, unseen_channels=[1, 2])
    assert out.tolist() == [[[2, 0]]]  # best unseen channel at pixel 0 is 2 (seen channel 0 excluded)


def test_seen_bias_only_on_training_classes_and_live_text_matches_its_export(tmp_path):
    torch.manual_seed(0)
    live = CascadeCLIP(train_class_names=["cat", "dog"], seen_bias=0.1, **TINY).eval()
    views = torch.rand(1, 3, 64, 64) * 255
    vocab = Vocabulary.from_text("cat, tree, dog")  # a new vocabulary at test time
    assert live.seen_channels(vocab) == [0, 2]
    with torch.no_grad():
        scores = live.predict_views(views, vocab)
        raw = live.mask_logits(live.normalize(views), live.text_embeddings(vocab)).sigmoid()
    torch.testing.assert_close(scores, raw - torch.tensor([0.1, 0.0, 0.1]).view(1, 3, 1, 1))

    path = tmp_path / "text.pth"
    export_text_embeddings(live.text_classifier, vocab, path)
    fixed = CascadeCLIP(train_class_names=["cat", "dog"], text_classifier=PrecomputedTextClassifier(path), **TINY).eval()
    fixed.load_state_dict(live.state_dict(), strict=True)  # its text-tower tensors are ignored
    with torch.no_grad():
        torch.testing.assert_close(fixed.predict_views(views, vocab), scores)
    with pytest.raises(TypeError, match="TextClassifier"):
        CascadeCLIP(train_class_names=["cat"], text_classifier="file.npy", **TINY)


def test_training_pads_small_crops_to_the_crop_size():
    torch.manual_seed(0)
    model = CascadeCLIP(train_class_names=["a", "b"], **TINY)
    batch = [{"image": torch.randint(0, 255, (3, 48, 32), dtype=torch.uint8), "sem_seg": torch.zeros(48, 32, dtype=torch.long)}]
    losses = model(batch)
    sum(losses.values()).backward()
    assert model.head.nga_weights[0].grad is not None
