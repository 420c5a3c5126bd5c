import json

import pytest
import torch
from open_clip.transformer import QuickGELU
from torch import nn

from ovseg_d2.clip import (
    CLIPVisionTower,
    build_clip,
    clip_pixel_stats,
    get_model_config,
    interpolate_positional_embedding,
)
from ovseg_d2.clip.finetune import split_qkv_state_dict

TINY = "tiny-vit-p16-w64"


def _assert_same_weights(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_tiny_config_matches_catseg_golden():
    m = build_clip(TINY)
    v = m.visual
    assert v.positional_embedding.shape == (197, 64)
    assert len(v.transformer.resblocks) == 9
    assert v.transformer.resblocks[0].attn.num_heads == 4
    assert v.proj.shape == (64, 32)
    assert m.transformer.resblocks[0].attn.num_heads == 4 and len(m.transformer.resblocks) == 2
    assert m.token_embedding.weight.shape == (49408, 32)
    assert isinstance(v.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert all(p.dtype == torch.float32 for p in m.parameters())


def test_config_by_json_path_and_unknown(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(get_model_config(TINY)))
    assert build_clip(str(path)).visual.positional_embedding.shape == (197, 64)
    with pytest.raises(KeyError, match="Unknown CLIP model"):
        build_clip("no-such-model")


def test_openai_plain_state_dict_fp16(tmp_path, fresh_tiny):
    sd = {k: v.half() for k, v in fresh_tiny.state_dict().items()}
    sd.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    path = tmp_path / "ViT-tiny.pt"
    torch.save(sd, path)
    loaded = build_clip(TINY, path)
    for k, v in loaded.state_dict().items():
        assert v.dtype == torch.float32
        assert torch.equal(v, fresh_tiny.state_dict()[k].half().float()), k


class _Holder(nn.Module):
    """Module tree with given parameter names, to write a TorchScript archive like OpenAI's."""

    def __init__(self, state_dict):
        super().__init__()
        for name, value in state_dict.items():
            owner = self
            *path, leaf = name.split(".")
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            owner.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_openai_torchscript_archive(tmp_path, fresh_tiny):
    sd = dict(fresh_tiny.state_dict())
    holder = _Holder(sd)
    holder.register_buffer("input_resolution", torch.tensor(224))
    path = tmp_path / "jit.pt"
    torch.jit.script(holder).save(str(path))
    _assert_same_weights(build_clip(TINY, path), fresh_tiny)


def test_open_clip_checkpoint_with_module_prefix_and_split_qkv(tmp_path, fresh_tiny):
    path = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": {"module." + k: v for k, v in fresh_tiny.state_dict().items()}}, path)
    _assert_same_weights(build_clip(TINY, path), fresh_tiny)
    torch.save(split_qkv_state_dict(fresh_tiny.state_dict()), path)  # CAT-Seg layout (q/k/v stored split)
    _assert_same_weights(build_clip(TINY, path), fresh_tiny)


def test_safetensors(tmp_path, fresh_tiny):
    import safetensors.torch as st  # declared in requirements/base.txt (build_clip reads .safetensors)
    path = tmp_path / "w.safetensors"
    st.save_file({k: v.contiguous() for k, v in fresh_tiny.state_dict().items()}, str(path))
    _assert_same_weights(build_clip(TINY, path), fresh_tiny)


def test_loading_errors(tmp_path, fresh_tiny):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        build_clip(TINY, tmp_path / "nowhere.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        build_clip(TINY, junk)
    # A checkpoint of another architecture: missing, unexpected and shape-mismatched keys are listed.
    sd = dict(fresh_tiny.state_dict())
    del sd["ln_final.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["text_projection"] = torch.zeros(32, 16)
    wrong = tmp_path / "wrong.pt"
    torch.save(sd, wrong)
    with pytest.raises(ValueError) as err:
        build_clip(TINY, wrong)
    msg = str(err.value)
    assert "wrong.pt" in msg and "ln_final.bias" in msg and "extra.weight" in msg and "text_projection" in msg
    # A table trained at 224 into a model built at 384: resizing belongs to the tower, not the loader.
    cfg = get_model_config(TINY)
    cfg["vision_cfg"]["image_size"] = 384
    cfg_path = tmp_path / "tiny384.json"
    cfg_path.write_text(json.dumps(cfg))
    good = tmp_path / "good.pt"
    torch.save(fresh_tiny.state_dict(), good)
    with pytest.raises(ValueError, match="image_size"):
        build_clip(cfg_path, good)


@pytest.mark.parametrize("mode,size,grid", [("bilinear", 320, (20, 20)), ("bicubic", (256, 320), (16, 20))])
def test_build_at_another_image_size_resizes_the_loaded_table(tmp_path, fresh_tiny, mode, size, grid):
    """Cascade-CLIP: a 224 checkpoint built at 512, its table resized once on load."""
    path = tmp_path / "tiny224.pt"
    torch.save({k: v.half() for k, v in fresh_tiny.state_dict().items()}, path)  # OpenAI ships fp16
    clip = build_clip(TINY, path, image_size=size, pos_interpolation=mode)
    saved = fresh_tiny.visual.positional_embedding.detach().half().float()
    expected = interpolate_positional_embedding(saved, (14, 14), grid, mode)
    table = clip.visual.positional_embedding
    assert table.shape == (1 + grid[0] * grid[1], 64) and torch.equal(table, expected)
    assert not torch.allclose(
        table, interpolate_positional_embedding(saved, (14, 14), grid, "bicubic" if mode == "bilinear" else "bilinear")
    )
    for k, v in clip.state_dict().items():
        if k != "visual.positional_embedding":
            assert torch.equal(v, fresh_tiny.state_dict()[k].half().float()), k
    # The tower built at that size uses the table as is; a 224 tower resizing at runtime agrees.
    tower = CLIPVisionTower(clip.visual)
    assert tower.table_grid == grid and tower.resized_positional_embedding(grid) is table
    images = torch.randn(1, 3, grid[0] * 16, grid[1] * 16)
    reference = build_clip(TINY, path)
    with torch.no_grad():
        runtime = CLIPVisionTower(reference.visual, pos_interpolation=mode)(images).tokens
        assert torch.allclose(tower(images).tokens, runtime, atol=1e-5)
    # A checkpoint already at that size loads unchanged.
    resized = tmp_path / "tiny_resized.pt"
    torch.save(clip.state_dict(), resized)
    assert torch.equal(build_clip(TINY, resized, image_size=size).visual.positional_embedding, table)


def test_image_size_errors(tmp_path):
    with pytest.raises(ValueError, match="multiple of its patch size 16"):
        build_clip(TINY, image_size=300)
    with pytest.raises(ValueError, match="pos_interpolation"):
        build_clip(TINY, image_size=320, pos_interpolation="nearest")


def test_pixel_stats():
    mean, std = clip_pixel_stats("openai")
    assert mean == (122.7709383, 116.7460125, 104.09373615) and std == (68.5005327, 66.6321579, 70.3231630)
    assert clip_pixel_stats("imagenet") == ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
    with pytest.raises(ValueError):
        clip_pixel_stats("laion")
