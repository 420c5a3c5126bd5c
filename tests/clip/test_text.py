import pytest
import torch

from ovseg_d2.clip import CLIPTextTower, available_templates, get_templates


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
