"""OVSegmentor's parts beyond the golden cases: assignment, entity-head padding switch, mask-consistency
gating, momentum encoder, background rule, text-tower errors, ViT-S/RoBERTa widths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ovseg_d2.inference import InferencePolicy
from ovseg_d2.modeling import Vocabulary
from ovseg_d2.modeling.hf_text import TextTokenizer, build_hf_text_model
from ovseg_d2.projects.ovsegmentor import EntityCompletionHead, GroupingBlock
from ovseg_d2.projects.ovsegmentor.mask_consistency import detach_unrelated_groups, mask_dice_loss

from .conftest import tiny_ovsegmentor


def test_eval_assignment_is_one_hot_and_empty_groups_keep_their_token() -> None:
    torch.manual_seed(0)
    block = GroupingBlock(16, 2, num_group_tokens=6, num_output_groups=3).eval()
    patches, groups = torch.randn(2, 10, 16), torch.randn(2, 6, 16)
    out, a = block(patches, groups)
    assert torch.equal(a.hard.sum(dim=1), torch.ones(2, 10))  # every patch in exactly one group
    assert torch.equal(a.hard.argmax(dim=1), a.soft.argmax(dim=1))
    # A group without patches: the "+1" keeps the division finite and its output is the projected token.
    with torch.no_grad():
        block.assign_q.weight.zero_()
        block.assign_q.bias.zero_()
        block.assign_q.bias[0] = 1.0  # group queries differ only by a constant -> ties -> argmax = group 0
    out, a = block(patches, groups)
    assert a.hard[:, 1:].sum() == 0 and torch.isfinite(out).all()


def test_training_assignment_uses_the_gumbel_sampler() -> None:
    torch.manual_seed(0)
    block = GroupingBlock(16, 2, num_group_tokens=6, num_output_groups=3).train()
    patches, groups = torch.randn(1, 10, 16), torch.randn(1, 6, 16)
    noise = torch.zeros(1, 3, 10)
    noise[:, 2] = 1e4  # overwhelming noise on group 2: every patch goes there
    block.gumbel_sampler = lambda shape, like: noise
    _, a = block(patches, groups)
    assert torch.equal(a.hard.argmax(dim=1), torch.full((1, 10), 2))
    assert not torch.equal(a.soft.argmax(dim=1), a.hard.argmax(dim=1))  # the soft map has no noise


def test_entity_head_padding_switch() -> None:
    """Masked padding: the [CLS] output does not depend on how far the question is padded; the
    official head (attend_padding=True) does."""
    torch.manual_seed(0)
    visual = torch.randn(1, 4, 16)
    question = torch.randn(1, 6, 16)
    padded = torch.cat([question, torch.randn(1, 3, 16)], dim=1)
    mask, padded_mask = torch.ones(1, 6), torch.cat([torch.ones(1, 6), torch.zeros(1, 3)], dim=1)
    for attend_padding, invariant in ((False, True), (True, False)):
        torch.manual_seed(1)
        head = EntityCompletionHead(16, num_heads=2, attend_padding=attend_padding).eval()
        same = torch.allclose(head(visual, question, mask), head(visual, padded, padded_mask), atol=1e-6)
        assert same == invariant, attend_padding


def test_mask_loss_gates_the_least_related_groups() -> None:
    maps = torch.randn(1, 4, 3, 3, requires_grad=True)
    scores = torch.tensor([[0.5, -2.0, 3.0, -1.0]])  # lowest two: groups 1 and 3
    gated = detach_unrelated_groups(maps, scores, 0.5)
    gated.sum().backward()
    assert maps.grad[0, :, 0, 0].tolist() == [1.0, 0.0, 1.0, 0.0]


def test_dice_target_binarises_at_a_fraction_of_the_maximum() -> None:
    target = torch.tensor([[[10.0, 10.0, -10.0, -10.0]]])  # sigmoid ~ [1, 1, 0, 0] -> target [1, 1, 0, 0]
    perfect = torch.tensor([[[5.0, 5.0, 1.0, 1.0]]])  # min-max -> [1, 1, 0, 0]
    assert mask_dice_loss(perfect, target, 0.6).item() == pytest.approx(0.0, abs=1e-6)
    inverse = torch.tensor([[[1.0, 1.0, 5.0, 5.0]]])
    assert mask_dice_loss(inverse, target, 0.6).item() == pytest.approx(1 - 1 / 5)  # (0 + 1) / (2 + 2 + 1)


def test_momentum_encoder_syncs_once_then_follows_by_ema() -> None:
    model = tiny_ovsegmentor(2)
    with torch.no_grad():
        model.momentum_encoder.group_token.fill_(5.0)
    model.before_step()
    assert torch.equal(model.momentum_encoder.group_token, model.image_encoder.group_token)
    with torch.no_grad():
        model.image_encoder.group_token.add_(1.0)
    before = model.momentum_encoder.group_token.clone()
    model.before_step()  # already synced: no copy
    model.after_step(0)
    torch.testing.assert_close(model.momentum_encoder.group_token, before + 0.01)
    assert not any(p.requires_grad for p in model.momentum_encoder.parameters())
    assert not any(p.requires_grad for p in model.text_encoder.parameters())  # stage 2 freezes BERT


def test_losses_from_records_weight_the_mask_loss() -> None:
    torch.manual_seed(0)
    model = tiny_ovsegmentor(2).train()
    record = lambda caption: {  # noqa: E731
        "image": torch.randint(0, 255, (3, 224, 224), dtype=torch.uint8), "caption": caption,
        "question": "a [MASK] on the grass .", "answer": "a photo of a dog",
        "pair": {"image": torch.randint(0, 255, (3, 224, 224), dtype=torch.uint8), "entity": "dog"},
    }
    losses = model([record("a dog on the grass ."), record("a cat on a sofa .")])
    assert set(losses) == {"loss_matching", "loss_entity", "loss_mask"}
    # the weighted value is 0.1 x the Dice term (Dice <= 1 summed over 2 samples / 4 groups)
    assert 0 < losses["loss_mask"].item() <= 0.1 * 2 / 4


def test_background_rule_per_view() -> None:
    """Background channel = 1 exactly where the pixel's group scores below min(threshold, best group)."""
    torch.manual_seed(0)
    model = tiny_ovsegmentor(0).eval()
    vocabulary = Vocabulary(("background", "cat", "dog"), ("background", "cat", "dog"), (0, 1, 2), 0)
    view = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        for threshold in (0.0, 2.0):  # 0: nothing below; 2 > every score: tau = the best group's score
            model.inference = InferencePolicy(background_threshold=threshold)
            scores = model.predict_views(view, vocabulary)[0]
            best = scores[1:].amax(dim=0)
            expected = (best < min(threshold, best.max().item())).float()
            assert torch.equal(scores[0], expected)
            assert (scores[0].sum() > 0) == (threshold == 2.0)
        model.inference = InferencePolicy(background_threshold={"other": 0.5})
        model.test_dataset = "ovseg_voc21_val"
        with pytest.raises(KeyError, match="ovseg_voc21_val"):
            model.predict_views(view, vocabulary)


def test_text_tower_errors_name_the_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer folder not found.*huggingface"):
        TextTokenizer(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        TextTokenizer(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        build_hf_text_model(str(tmp_path / "bert-base-uncased"))
    with pytest.raises(ValueError, match="model_type"):
        build_hf_text_model({"hidden_size": 64})


def test_vit_s_roberta_widths_project_the_text_side() -> None:
    """ViT-S (384) + RoBERTa (768, here at tiny depth): the entity head works at the narrower width."""
    model = tiny_ovsegmentor(
        1, image_encoder=dict(embed_dim=48, depth=2, num_heads=6, grouping_after=1, num_group_tokens=8,
                              num_output_groups=4, drop_path_rate=0.0),
        text_model={"model_type": "roberta", "vocab_size": 136, "hidden_size": 64, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 80,
                    "type_vocab_size": 1, "pad_token_id": 1},
        entity_heads=8,
    )
    assert isinstance(model.align_image, torch.nn.Identity)
    assert tuple(model.align_text.weight.shape) == (48, 64)
    tokens = model.tokenizer(["a [MASK] on the grass ."], 12)
    assert tuple(model.encode_text(tokens).shape) == (1, 12, 64)


def test_zero_shot_accuracy_counts_top1_and_top5(tmp_path: Path) -> None:
    """Labels set to each image's best class (first half) or worst class (second half) of 6: 50% top-1,
    50% top-5 (the worst of 6 is never in the top 5)."""
    import torch.nn.functional as F
    from PIL import Image

    from ovseg_d2.clip import get_templates
    from ovseg_d2.data.image_text import ImageTextMapper
    from ovseg_d2.modeling import HFTextClassifier
    from ovseg_d2.projects.ovsegmentor import zero_shot_accuracy

    torch.manual_seed(0)
    model = tiny_ovsegmentor(0).eval()
    names = ["cat", "dog", "bus", "sofa", "person", "plant"]
    vocabulary = Vocabulary.from_entries(names)
    templates = get_templates("groupvit_subset")
    records = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray((torch.rand(40, 56, 3) * 255).byte().numpy()).save(path)
        records.append({"file_name": str(path), "caption": "", "label": 0})
    with torch.no_grad():
        classes = HFTextClassifier(model.text_encoder, model.tokenizer, templates, projector=model.text_projector)(vocabulary)
        mapper = ImageTextMapper(32, is_train=False)
        images = model.normalize(torch.stack([mapper(r)["image"].float() for r in records]))
        logits = F.normalize(model.encode_image(images)[1], dim=-1) @ classes.T
    for i, record in enumerate(records):
        record["label"] = int(logits[i].argmax() if i < 2 else logits[i].argmin())
    result = zero_shot_accuracy(model, records, vocabulary, templates, image_size=32, batch_size=3)
    assert result == {"top1": 50.0, "top5": 50.0}
