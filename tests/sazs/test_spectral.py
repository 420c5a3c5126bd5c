"""Spectral eigen-segments (ovseg_d2.data.spectral), their cache + tool, and the zero-shot fusion rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovseg_d2.data.spectral import EigenSegmentCache, eigen_segments, laplacian_eigenvectors

REPO = Path(__file__).resolve().parents[2]


def planted_features(h: int = 6, w: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Patch features of two groups (a 3x3 object in a background) with small noise."""
    rng = np.random.default_rng(seed)
    region = np.zeros((h, w), bool)
    region[1:4, 2:5] = True
    base = rng.normal(size=(2, 16))
    feats = np.where(region.reshape(-1, 1), base[1], base[0]) + 0.05 * rng.normal(size=(h * w, 16))
    return feats, region


def test_second_eigenvector_finds_the_planted_object():
    feats, region = planted_features()
    values, vectors = laplacian_eigenvectors(feats, k=3)
    assert values[0] == pytest.approx(0.0, abs=1e-8) and np.all(np.diff(values) >= -1e-12)
    segment = vectors[1].reshape(region.shape) > 0
    np.testing.assert_array_equal(segment, region)  # sign fixed: the positive side is the smaller one
    constant = vectors[0] > 0
    assert constant.all() or not constant.any()


def test_eigen_segments_resize_nearest():
    vectors = np.array([[[1.0, -1.0], [-1.0, 1.0]]])
    seg = eigen_segments(vectors, (4, 6))
    assert seg.shape == (1, 4, 6) and seg.dtype == torch.bool
    assert seg[0, 0, :3].all() and not seg[0, 0, 3:].any() and seg[0, 3, 3:].all()


def test_cache_round_trip_and_official_pngs(tmp_path):
    cache = EigenSegmentCache(tmp_path, num_segments=2)
    vectors = np.stack([np.ones((3, 4)), -np.arange(12.0).reshape(3, 4) + 5.5])
    cache.save("/data/images/2007_000033.jpg", np.zeros(2), vectors)
    seg = cache.segments("/elsewhere/2007_000033.png", (3, 4))
    np.testing.assert_array_equal(seg.numpy(), vectors > 0)
    # Official SAZS PNGs: 255 = in the segment; other values are not.
    mask = np.array([[0, 255], [255, 7]], np.uint8)
    for k in range(2):
        Image.fromarray(mask if k else 255 - mask).save(tmp_path / f"img2_k{k}.png")
    seg = cache.segments("x/img2.jpg", (2, 2))
    np.testing.assert_array_equal(seg[1].numpy(), mask == 255)
    with pytest.raises(FileNotFoundError, match="build_eigen_cache.py"):
        cache.segments("missing.jpg", (2, 2))
    with pytest.raises(ValueError, match="size"):
        cache.segments("x/img2.jpg", (3, 3))


def test_snap_to_eigen_segment_never_reads_ground_truth():
    from ovseg_d2.projects.sazs import snap_to_eigen_segment

    scores = torch.zeros(2, 4, 4)
    scores[1, :2, :2] = 1.0  # predicted foreground: the top-left 2x2 block
    near = torch.zeros(4, 4, dtype=torch.bool)
    near[:2, :3] = True  # IoU 4/6 with the prediction
    far = torch.zeros(4, 4, dtype=torch.bool)
    far[3:, :] = True  # IoU 0
    fused = snap_to_eigen_segment(scores, torch.stack([far, near]), min_iou=0.5)
    assert torch.equal(fused[1].bool(), near) and torch.equal(fused[0].bool(), ~near)
    kept = snap_to_eigen_segment(scores, torch.stack([far, near]), min_iou=0.7)
    assert torch.equal(kept, scores)


def test_tool_builds_the_cache_for_a_dataset(tmp_path, monkeypatch):

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(images / f"im{i}.jpg")
    name = "sazs_test_eigen_images"
    records = [{"file_name": str(images / f"im{i}.jpg")} for i in range(2)]
    script = (
        "import sys; from detectron2.data import DatasetCatalog; "
        f"DatasetCatalog.register({name!r}, lambda: {records!r}); "
        "sys.path.insert(0, 'tools'); import build_eigen_cache; "
        f"sys.exit(build_eigen_cache.main(['--dataset', {name!r}, '--output', {str(tmp_path / 'cache')!r}, "
        "'--model', 'vit_tiny_patch16_224', '--weights', 'none', '--num-eigenvectors', '3', "
        "'--model-kwargs', '{\"embed_dim\": 32, \"depth\": 2, \"num_heads\": 2, \"patch_size\": 4, \"img_size\": 32}']))"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "eigenvectors: 100%" in proc.stderr  # the progress bar
    cache = EigenSegmentCache(tmp_path / "cache", num_segments=3)
    vectors = cache.load(images / "im0.jpg")
    assert vectors.shape == (3, 5, 7)  # 20x28 image, patch 4 -> 5x7 grid
    assert cache.segments(images / "im1.jpg", (20, 28)).shape == (3, 20, 28)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "2 already cached" in proc.stdout


def test_relabel_eigen_segments_multiclass():
    from ovseg_d2.projects.sazs.fusion import relabel_eigen_segments

    scores = torch.zeros(3, 4, 4)
    scores[0] = 1.0
    scores[2, :2, :] = 2.0  # class 2 on the top half, except one pixel of class 1
    scores[1, 0, 0] = 3.0
    top = torch.zeros(4, 4, dtype=torch.bool)
    top[:2] = True
    lone = torch.zeros(4, 4, dtype=torch.bool)
    lone[3, 3] = True  # predicted class 0 there; IoU with class 0's 8 pixels is 1/8: not applied
    fused = relabel_eigen_segments(scores, torch.stack([lone, top]), min_iou=0.5)
    labels = fused.argmax(0)
    assert (labels[:2] == 2).all() and (labels[2:] == 0).all()


def test_keys_of_open_clip_and_timm_blocks_match_their_attention():
    """The keys are the k-projection of the normalised block input, for both ViT families."""
    import timm
    from torch import nn

    from ovseg_d2.clip import CLIPVisionTower, TimmViTTower, build_clip
    from ovseg_d2.data.spectral import ViTKeyFeatures

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, embed_dim=32, depth=2, num_heads=2, patch_size=4, img_size=32).eval()
    clip = build_clip("tiny-sazs-text").eval()  # its image tower: 1 block, patch 32
    for tower, size in ((TimmViTTower(vit), (20, 28)), (CLIPVisionTower(clip.visual), (64, 64))):
        image = torch.randn(1, 3, *size)
        feats, grid = ViTKeyFeatures(tower)(image)
        ph, pw = tower.patch_size
        assert grid == (size[0] // ph, size[1] // pw) and feats.shape[1] == grid[0] * grid[1]
        block = tower.blocks[-1]
        with torch.no_grad():
            x, _ = tower.run_blocks(tower.embed(image), stop=tower.num_blocks - 1)
        width = x.shape[-1]
        with torch.no_grad():  # the reference: the block's own attention module, queried for its keys
            if isinstance(getattr(block, "attn", None), nn.MultiheadAttention):
                q, k, v = nn.functional._in_projection_packed(*(block.ln_1(x),) * 3, block.attn.in_proj_weight, block.attn.in_proj_bias)
            else:
                k = block.attn.qkv(block.norm1(x)).unflatten(-1, (3, width))[..., 1, :]
        torch.testing.assert_close(feats, k[:, -feats.shape[1] :])
