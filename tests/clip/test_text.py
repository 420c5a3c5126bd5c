import pytest
import torch
import torch.nn.functional as F

from ovseg_d2.clip import (
    CLIPTextTower,
    TextEmbedder,
    available_templates,
    embed_vocabulary,
    get_templates,
    split_synonyms,
)


class _RecordingTower:
    """Stands in for CLIPTextTower: deterministic embeddings per text, records what was encoded."""

    def __init__(self):
        self.seen = []

    def encode(self, texts):
        self.seen.append(list(texts))
        g = [torch.Generator().manual_seed(sum(map(ord, t)) * 131 + len(t)) for t in texts]
        return torch.stack([torch.randn(8, generator=gi) for gi in g])


def test_split_synonyms():
    assert split_synonyms("person, people, human") == ["person", "people", "human"]
    assert split_synonyms("dog,puppy") == ["dog,puppy"]
    assert split_synonyms(" road ,  street ") == ["road", "street"]
    assert split_synonyms("bed ", strip=False) == ["bed "]


def test_templates():
    counts = {"catseg": 1, "imagenet80": 80, "imagenet_select": 8, "tcl_custom": 9, "groupvit_subset": 7, "simple": 1}
    assert set(counts) <= set(available_templates())
    for name, n in counts.items():
        assert len(get_templates(name)) == n, name
    assert get_templates("catseg") == ("A photo of a {} in the scene",)
    assert get_templates("simple") == ("a photo of a {}.",)
    assert get_templates("tcl_custom")[-1] == "a photo of {}s."
    assert len(set(get_templates("imagenet80"))) == 80
    with pytest.raises(KeyError):
        get_templates("nope")


def test_prompt_construction_and_reductions():
    tower = _RecordingTower()
    entries = ["person, people", "bed "]
    templates = ("a {}.", "b {}s.")
    first = embed_vocabulary(tower, entries, templates, synonyms="first", normalize=False)
    assert tower.seen[-1] == ["a person.", "b persons.", "a bed .", "b bed s."]  # verbatim, as TCL's "bed "
    raw = tower.encode(["a person.", "b persons."])
    assert torch.allclose(first[0], raw.mean(0))

    embed_vocabulary(tower, entries, templates, synonyms="mean")
    assert tower.seen[-1][:4] == ["a person.", "a people.", "b persons.", "b peoples."]
    raw = tower.encode(["a person.", "a people.", "b persons.", "b peoples."])
    mean_norm = embed_vocabulary(tower, entries, templates, synonyms="mean", template_reduce="mean_then_normalize")
    assert torch.allclose(mean_norm[0], F.normalize(raw.mean(0), dim=0), atol=1e-6)
    norm_mean = embed_vocabulary(tower, entries, templates, synonyms="mean", template_reduce="normalize_then_mean")
    assert torch.allclose(norm_mean[0], F.normalize(F.normalize(raw, dim=-1).mean(0), dim=0), atol=1e-6)
    assert not torch.allclose(mean_norm[0], norm_mean[0], atol=1e-4)

    per_template = embed_vocabulary(tower, entries, templates, keep_templates=True)
    assert per_template.shape == (2, 2, 8)
    assert torch.allclose(per_template.norm(dim=-1), torch.ones(2, 2), atol=1e-6)


def test_tower_matches_open_clip_encode_text(tiny_clip, tokenizer):
    tower = CLIPTextTower(tiny_clip, tokenizer, chunk_size=2)
    texts = ["a photo of a dog.", "sky", "A photo of a person in the scene"]
    with torch.no_grad():
        ours = tower.encode(texts)
        ref = tiny_clip.encode_text(tokenizer(texts))
    assert ours.shape == (3, 32)
    assert torch.allclose(ours, ref, atol=1e-6)
    assert set(tower.state_dict()) == {
        k for k in tiny_clip.state_dict() if not k.startswith("visual.") and k != "logit_scale"
    }


def test_embedder_cache_invalidation_and_training_bypass(fresh_tiny, tokenizer):
    tower = CLIPTextTower(fresh_tiny, tokenizer)
    embedder = TextEmbedder(tower, get_templates("catseg"))
    vocab = ["person, people", "sky"]
    tower.requires_grad_(False)
    e1 = embedder(vocab)
    e2 = embedder(vocab)
    assert embedder.encode_calls == 1 and e2 is e1  # encoded once, then served from the cache
    assert e1.shape == (2, 32) and torch.allclose(e1.norm(dim=-1), torch.ones(2))
    embedder(["tree"])
    assert embedder.encode_calls == 2  # another vocabulary is another entry

    with torch.no_grad():
        fresh_tiny.text_projection.mul_(-1.0)  # in-place update (what an optimizer step does)
    e3 = embedder(vocab)
    assert embedder.encode_calls == 3 and torch.allclose(e3, -e1, atol=1e-6)

    tower.transformer.resblocks[0].attn.in_proj_weight.requires_grad_(True)  # text tower being trained
    calls = embedder.encode_calls
    a, b = embedder(vocab), embedder(vocab)
    assert embedder.encode_calls == calls + 2 and a is not b and a.requires_grad
    a.sum().backward()
    assert tower.transformer.resblocks[0].attn.in_proj_weight.grad.abs().sum() > 0
    with torch.no_grad():  # evaluation while training: the cache serves again (weights unchanged since e3)
        assert embedder(vocab) is e3
    assert embedder.encode_calls == calls + 2
