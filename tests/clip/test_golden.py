"""Equivalence with the official CAT-Seg and TCL code, through the golden fixtures vendored in
`tests/fixtures/golden/{catseg,tcl}` (tiny random CLIPs run by the official repositories; copied
from the workspace's shared/golden, see the READMEs there)."""

import io
from pathlib import Path

import numpy as np
import torch

from ovseg_d2.clip import (
    CLIPTextTower,
    CLIPVisionTower,
    build_clip,
    clip_pixel_stats,
    get_templates,
    get_tokenizer,
    self_attention_only_block,
    value_path_block,
)
from ovseg_d2.modeling import CLIPTextClassifier, Vocabulary

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"


def _normalize(image: torch.Tensor, kind: str) -> torch.Tensor:
    mean, std = clip_pixel_stats(kind)
    return ((image.float() - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1))[None]


def _sample(t: torch.Tensor, ref: dict) -> torch.Tensor:
    return t.reshape(-1)[:: ref["stride"]][: ref["sample"].numel()]


def test_catseg_dense_features_and_text(tmp_path):
    sd = torch.load(GOLDEN / "catseg" / "official_tiny.pth", weights_only=True)["model"]
    prefix = "sem_seg_head.predictor.clip_model."
    path = tmp_path / "catseg_clip.pt"
    torch.save({k[len(prefix) :]: v.float() for k, v in sd.items() if k.startswith(prefix)}, path)  # q/k/v split
    clip = build_clip("tiny-vit-p16-w64", path).eval().requires_grad_(False)
    case = torch.load(GOLDEN / "catseg" / "cases.pt", weights_only=True)["a"]

    tokenizer = get_tokenizer("tiny-vit-p16-w64")
    assert torch.equal(tokenizer(case["prompts"]).int(), case["tokens"].int())
    text = CLIPTextClassifier(CLIPTextTower(clip, tokenizer), get_templates("catseg"), synonyms="first")(
        Vocabulary.from_entries(case["class_names"])
    )
    assert (text - case["text_embeds"]).abs().max() < 1e-5

    tower = CLIPVisionTower(clip.visual, pos_interpolation="bicubic")
    with torch.no_grad():
        f = tower(_normalize(case["image"], "openai"), taps=(3, 7), block_overrides={-1: value_path_block("cls")})
    assert (_sample(f.dense()[0], case["dense_embed"]) - case["dense_embed"]["sample"]).abs().max() < 5e-5
    for i in (3, 7):
        ref = case[f"tap{i}"]  # sequence-first (577, 1, 64)
        assert (_sample(f.taps[i].transpose(0, 1), ref) - ref["sample"]).abs().max() < 5e-5


def test_tcl_dense_features_and_text():
    from PIL import Image

    clip = build_clip("tiny-tcl", GOLDEN / "tcl" / "clip_tiny_openai.pth").eval()
    cases = torch.load(GOLDEN / "tcl" / "cases.pt", weights_only=True)
    case = cases["a_dense"]
    assert tuple(cases["templates"]) == get_templates("tcl_custom")
    with torch.no_grad():
        text = CLIPTextClassifier(CLIPTextTower(clip, get_tokenizer("tiny-tcl")), get_templates("tcl_custom"))(
            Vocabulary.from_entries(cases["class_names"])  # includes "bed " -> "a photo of bed s."
        )
    assert (text - case["text_emb"]).abs().max() < 1e-5

    png = Image.open(io.BytesIO(case["image_png"].numpy().tobytes())).convert("RGB")
    x = _normalize(torch.from_numpy(np.array(png)).permute(2, 0, 1), "imagenet")
    with torch.no_grad():
        f = CLIPVisionTower(clip.visual)(x, taps=(2, 3), block_overrides={3: self_attention_only_block})
    assert (f.taps[2][0][case["tap_feature_tokens"]] - case["tap_feature"][:, 0]).abs().max() < 5e-5
    img_emb = f.tap_map(3)[0][:, case["img_emb_rows"]][:, :, case["img_emb_cols"]]
    assert (img_emb - case["img_emb"][0]).abs().max() < 5e-5
