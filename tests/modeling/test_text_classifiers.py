"""Text classifiers: prompt recipes, caches keyed by parameters AND buffers, files, HF models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

from ovseg_d2.clip import CLIPTextTower, build_clip, get_templates, get_tokenizer
from ovseg_d2.data.vocab import load_vocabulary
from ovseg_d2.modeling import (
    CLIPTextClassifier,
    HFTextClassifier,
    PrecomputedTextClassifier,
    Vocabulary,
    export_text_embeddings,
)
from ovseg_d2.modeling.text_classifiers import embed_vocabulary

TINY = "tiny-vit-p16-w64"
REPO = Path(__file__).resolve().parents[2]


class _RecordingEncoder:
    """Deterministic embedding per text; records what was encoded."""

    def __init__(self):
        self.seen = []

    def __call__(self, texts):
        self.seen.append(list(texts))
        g = [torch.Generator().manual_seed(sum(map(ord, t)) * 131 + len(t)) for t in texts]
        return torch.stack([torch.randn(8, generator=gi) for gi in g])


def test_prompt_construction_and_reductions():
    encode = _RecordingEncoder()
    vocab = Vocabulary.from_entries(["person, people", "bed "])
    templates = ("a {}.", "b {}s.")
    first = embed_vocabulary(encode, vocab, templates, synonyms="first", normalize=False)
    assert encode.seen[-1] == ["a person.", "b persons.", "a bed .", "b bed s."]  # verbatim, as TCL's "bed "
    raw = encode(["a person.", "b persons."])
    assert torch.allclose(first[0], raw.mean(0))

    embed_vocabulary(encode, vocab, templates, synonyms="mean")
    assert encode.seen[-1][:4] == ["a person.", "a people.", "b persons.", "b peoples."]
    raw = encode(["a person.", "a people.", "b persons.", "b peoples."])
    mean_norm = embed_vocabulary(encode, vocab, templates, synonyms="mean", template_reduce="mean_then_normalize")
    assert torch.allclose(mean_norm[0], F.normalize(raw.mean(0), dim=0), atol=1e-6)
    norm_mean = embed_vocabulary(encode, vocab, templates, synonyms="mean", template_reduce="normalize_then_mean")
    assert torch.allclose(norm_mean[0], F.normalize(F.normalize(raw, dim=-1).mean(0), dim=0), atol=1e-6)
    assert not torch.allclose(mean_norm[0], norm_mean[0], atol=1e-4)

    per_template = embed_vocabulary(encode, vocab, templates, keep_templates=True)
    assert per_template.shape == (2, 2, 8)
    assert torch.allclose(per_template.norm(dim=-1), torch.ones(2, 2), atol=1e-6)
    with pytest.raises(ValueError, match="synonyms must be one of"):
        embed_vocabulary(encode, vocab, templates, synonyms="all")


@pytest.fixture
def clip_tower():
    torch.manual_seed(1)
    clip = build_clip(TINY).eval()
    return CLIPTextTower(clip, get_tokenizer(TINY))


def test_clip_classifier_cache_invalidation_and_training_bypass(clip_tower):
    classifier = CLIPTextClassifier(clip_tower, get_templates("catseg"))
    vocab = Vocabulary.from_entries(["person, people", "sky"])
    clip_tower.requires_grad_(False)
    e1 = classifier(vocab)
    e2 = classifier(Vocabulary.from_text("person|people, sky"))  # the same entries, another value
    assert classifier.encode_calls == 1 and e2 is e1
    assert e1.shape == (2, 32) and torch.allclose(e1.norm(dim=-1), torch.ones(2))
    classifier(Vocabulary.from_entries(["tree"]))
    assert classifier.encode_calls == 2

    with torch.no_grad():
        clip_tower.text_projection.mul_(-1.0)  # in-place update (what an optimizer step does)
    e3 = classifier(vocab)
    assert classifier.encode_calls == 3 and torch.allclose(e3, -e1, atol=1e-6)

    clip_tower.transformer.resblocks[0].attn.in_proj_weight.requires_grad_(True)  # text tower being trained
    calls = classifier.encode_calls
    a, b = classifier(vocab), classifier(vocab)
    assert classifier.encode_calls == calls + 2 and a is not b and a.requires_grad
    a.sum().backward()
    assert clip_tower.transformer.resblocks[0].attn.in_proj_weight.grad.abs().sum() > 0
    with torch.no_grad():  # evaluation while training: the cache serves again (weights unchanged since e3)
        assert classifier(vocab) is e3
    assert classifier.encode_calls == calls + 2


# ---------------------------------------------------------------------------- HuggingFace (BERT)
CLS, PAD = 1, 0


def _char_tokenizer(texts):
    """[CLS] + one id per character, padded to the longest text (what an HF tokenizer returns)."""
    ids = [[CLS] + [2 + ord(c) % 60 for c in t] for t in texts]
    width = max(map(len, ids))
    input_ids = torch.tensor([i + [PAD] * (width - len(i)) for i in ids])
    return {"input_ids": input_ids, "attention_mask": (input_ids != PAD).long()}


@pytest.fixture
def bert_and_projector():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    bert = transformers.BertModel(config).eval()
    projector = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8)).eval()  # OVSegmentor: BN in the projector
    return bert, projector


def _reference(bert, projector, names, templates):
    """Each prompt alone (no padding): CLS feature -> projector; mean over templates; L2-normalise."""
    rows = []
    with torch.no_grad():
        for n in names:
            feats = []
            for t in templates:
                batch = _char_tokenizer([t.format(n)])
                feats.append(bert(**batch).last_hidden_state[:, 0])
            rows.append(projector(torch.cat(feats)).mean(0))
    return F.normalize(torch.stack(rows), dim=-1)


def test_hf_classifier_matches_reference_and_notices_batchnorm_statistics(bert_and_projector):
    bert, projector = bert_and_projector
    templates = ("a photo of a {}.", "{}")
    classifier = HFTextClassifier(bert, _char_tokenizer, templates, projector=projector, chunk_size=3)
    vocab = Vocabulary.from_entries(["cat", "a red car"])
    bert.requires_grad_(False)  # evaluation of a frozen text model (stage 2)
    e1 = classifier(vocab)
    assert torch.allclose(e1, _reference(bert, projector, ["cat", "a red car"], templates), atol=1e-5)
    with torch.no_grad():  # the projector still requires grad: cached under no_grad (evaluation)
        assert classifier(vocab) is classifier(vocab)
    assert classifier.encode_calls == 2

    with torch.no_grad():  # a training step of the projector updates its BatchNorm running statistics only
        cached = classifier(vocab)
        projector.train()
        projector(torch.randn(16, 16) * 3 + 1)
        projector.eval()
        e2 = classifier(vocab)
    assert classifier.encode_calls == 3 and e2 is not cached  # a key of parameters alone would serve `cached`
    assert not torch.allclose(e1, e2, atol=1e-3)
    assert torch.allclose(e2, _reference(bert, projector, ["cat", "a red car"], templates), atol=1e-5)


def test_hf_classifier_bypasses_cache_in_train_mode(bert_and_projector):
    bert, projector = bert_and_projector
    classifier = HFTextClassifier(bert, _char_tokenizer, ("{}",), projector=projector)
    vocab = Vocabulary.from_entries(["cat", "dog"])
    bert.train()  # dropout active: every call is a fresh sample, never a cached one
    with torch.no_grad():
        a, b = classifier(vocab), classifier(vocab)
    assert classifier.encode_calls == 2 and not torch.allclose(a, b)
    bert.eval()
    with torch.no_grad():
        assert classifier(vocab) is classifier(vocab)
    assert classifier.encode_calls == 3


# ---------------------------------------------------------------------------- precomputed files
def test_export_and_load_precomputed_embeddings(clip_tower, tmp_path):
    live = CLIPTextClassifier(
        clip_tower, ("a photo of a {}.", "a {} in the scene."), template_reduce="normalize_then_mean"
    )
    full = Vocabulary.from_entries(["sky", "tree, bush", "road"])
    path = tmp_path / "emb.pth"
    export_text_embeddings(live, full, path)

    table = PrecomputedTextClassifier(path)
    assert torch.equal(table(full), live(full))
    seen = Vocabulary.from_entries(["road", "sky"])  # inductive training: a subset, in its own order
    assert torch.equal(table(seen), live(full)[[2, 0]])
    assert table(seen) is table(seen) and table.encode_calls == 2

    with pytest.raises(KeyError, match=r"no embedding for 1 prompt\(s\).*\['tree'\].*export_text_embeddings"):
        table(Vocabulary.from_entries(["sky", "tree"]))  # "tree" alone is not the file's "tree, bush"
    with pytest.raises(ValueError, match="class_names differ"):
        PrecomputedTextClassifier(path, class_names=["sky", "tree", "road"])


def test_official_npy_layout(tmp_path):
    """Cascade-CLIP ships bare float16 (C, 512) arrays in dataset class order."""
    rng = np.random.default_rng(0)
    array = rng.standard_normal((20, 8)).astype(np.float16)
    path = tmp_path / "voc12_single.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match="has no class names"):
        PrecomputedTextClassifier(path)
    table = PrecomputedTextClassifier(path, class_names="voc20")
    voc20 = load_vocabulary("voc20")
    emb = table(Vocabulary.from_entries(voc20[::-1]))
    assert emb.dtype == torch.float32 and torch.equal(emb, torch.from_numpy(array[::-1].astype(np.float32)))
    with pytest.raises(KeyError, match="'airplane'"):  # a renamed vocabulary does not match the file
        table(Vocabulary.from_entries(["airplane"]))
    with pytest.raises(ValueError, match=r"shape \(20, 8\) for 21 class names"):
        PrecomputedTextClassifier(path, class_names="voc21")


def test_export_tool_writes_what_our_tower_computes(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "export_text_embeddings", REPO / "tools" / "export_text_embeddings.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    torch.manual_seed(3)
    clip = build_clip(TINY).eval()
    weights, path = tmp_path / "clip.pt", tmp_path / "voc20.pth"
    torch.save(clip.state_dict(), weights)
    assert (
        tool.main(
            [
                "--clip-model",
                TINY,
                "--clip-weights",
                str(weights),
                "--vocabulary",
                "ovseg_voc20_val",
                "--templates",
                "imagenet_select",
                "--output",
                str(path),
            ]
        )
        == 0
    )

    vocab = Vocabulary.from_metadata("ovseg_voc20_val")
    live = CLIPTextClassifier(
        CLIPTextTower(clip, get_tokenizer(TINY)),
        get_templates("imagenet_select"),
        template_reduce="normalize_then_mean",
    )
    with torch.no_grad():
        expected = live(vocab)
    table = PrecomputedTextClassifier(path, class_names="voc20")
    assert torch.allclose(table(vocab), expected, atol=1e-6)
