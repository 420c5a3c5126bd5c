"""Spectral eigen-segments of images (Deep Spectral Methods, Melas-Kyriazi et al. 2022) and their disk cache.

Per image: self-supervised ViT features (the keys of the last block's attention, class token dropped,
heads concatenated) -> affinity W = max(F F^T, 0) / max of the row-normalised features -> the K
smallest generalised eigenvectors of (D - W) v = lambda D v (random-walk Laplacian; SciPy's sparse
`eigsh` in shift-invert mode, falling back to "smallest magnitude") -> each eigenvector's sign fixed so
that its positive part is the minority -> binary segments (v > 0) on the patch grid, resized to the
image (nearest). Eigenvector 0 is the constant one (its segment is empty or the whole image).

`EigenSegmentCache` stores the eigenvectors per image as `<root>/<image stem>.npz` (float16 (K, h, w) +
eigenvalues); `tools/build_eigen_cache.py` fills it for a dataset. It also reads the official SAZS
eigen-segment PNGs (`<root>/<image stem>_k<k>.png`, 0/255) when no `.npz` exists.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.sparse import csr_matrix, diags
from scipy.sparse.linalg import eigsh
from torch import nn

from ovseg_d2.clip import ViTTokenRunner

__all__ = [
    "EigenSegmentCache",
    "ViTKeyFeatures",
    "eigen_segments",
    "image_eigenvectors",
    "laplacian_eigenvectors",
]


def laplacian_eigenvectors(features: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) patch features -> (eigenvalues (k,), eigenvectors (k, N)) of the random-walk Laplacian
    of the feature affinity, smallest first, signs fixed (positive part = the smaller side)."""
    n = features.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"need 1 <= k < number of patches, got k={k} for {n} patches")
    f = features.astype(np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    w = np.clip(f @ f.T, 0.0, None)
    w = w / max(w.max(), 1e-12)
    d = w.sum(axis=1)
    d[d < 1e-12] = 1.0
    laplacian = csr_matrix(np.diag(d) - w)
    degree = diags(d).tocsr()
    v0 = np.random.default_rng(0).random(n)  # ARPACK's default start vector is random: fixed for reproducible caches
    try:
        values, vectors = eigsh(laplacian, k=k, sigma=0, which="LM", M=degree, v0=v0)
    except Exception:  # singular shift-invert factorisation: fall back to the slower smallest-magnitude search
        values, vectors = eigsh(laplacian, k=k, which="SM", M=degree, v0=v0)
    order = np.argsort(values)
    values, vectors = values[order], vectors[:, order].T
    for i in range(k):
        if 0.5 < float(np.mean(vectors[i] > 0)) < 1.0:
            vectors[i] = -vectors[i]
    return values, vectors


def eigen_segments(eigenvectors: np.ndarray | torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(K, h, w) eigenvectors on the patch grid -> (K, H, W) boolean segments (v > 0, nearest resize)."""
    v = torch.as_tensor(np.asarray(eigenvectors, dtype=np.float32))
    masks = (v > 0).float().unsqueeze(0)
    return F.interpolate(masks, size=tuple(int(s) for s in size), mode="nearest")[0].bool()


class ViTKeyFeatures(nn.Module):
    """Keys of the last attention block of a ViT (`TimmViTTower` or `CLIPVisionTower`), prefix tokens dropped:
    (B, 3, H, W) normalised images -> ((B, h*w, D), grid). Images are cropped top-left to multiples of
    the patch size (Deep Spectral's preprocessing)."""

    def __init__(self, tower: ViTTokenRunner) -> None:
        super().__init__()
        self.tower = tower

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        ph, pw = self.tower.patch_size
        images = images[..., : images.shape[-2] // ph * ph, : images.shape[-1] // pw * pw]
        grid = self.tower.grid_for(images.shape[-2:])
        last = self.tower.num_blocks - 1
        x, _ = self.tower.run_blocks(self.tower.embed(images), stop=last)
        keys = _attention_keys(self.tower.blocks[last], x)
        return keys[:, -grid[0] * grid[1] :], grid


def _attention_keys(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, L, W) block input -> (B, L, W) attention keys (heads concatenated) of a timm block
    (`norm1`, `attn.qkv`) or an open_clip block (`ln_1`, `nn.MultiheadAttention`)."""
    if hasattr(block, "norm1") and hasattr(block.attn, "qkv"):
        width = x.shape[-1]
        keys = block.attn.qkv(block.norm1(x))[..., width : 2 * width]
        k_norm = getattr(block.attn, "k_norm", None)
        if k_norm is not None and not isinstance(k_norm, nn.Identity):
            keys = k_norm(keys.unflatten(-1, (block.attn.num_heads, -1))).flatten(-2)
        return keys
    if hasattr(block, "ln_1") and isinstance(getattr(block, "attn", None), nn.MultiheadAttention):
        width = x.shape[-1]
        weight, bias = block.attn.in_proj_weight[width : 2 * width], block.attn.in_proj_bias[width : 2 * width]
        return F.linear(block.ln_1(x), weight, bias)
    raise NotImplementedError(f"attention keys of {type(block).__name__} blocks are not supported (timm or open_clip ViT blocks)")


def image_eigenvectors(
    extractor: ViTKeyFeatures, image: torch.Tensor, k: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """(3, H, W) normalised image -> (eigenvalues (k,), eigenvectors (k, h, w))."""
    features, (h, w) = extractor(image.unsqueeze(0))
    values, vectors = laplacian_eigenvectors(features[0].float().cpu().numpy(), k)
    return values, vectors.reshape(k, h, w)


class EigenSegmentCache:
    """Per-image eigenvectors under `root`, keyed by the image file's stem."""

    def __init__(self, root: str | Path, num_segments: int = 5) -> None:
        self.root = Path(root)
        self.num_segments = num_segments

    def path(self, file_name: str | Path) -> Path:
        return self.root / f"{Path(file_name).stem}.npz"

    def save(self, file_name: str | Path, eigenvalues: np.ndarray, eigenvectors: np.ndarray) -> Path:
        path = self.path(file_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, eigenvalues=eigenvalues.astype(np.float32), eigenvectors=eigenvectors.astype(np.float16))
        tmp.replace(path)  # a killed build never leaves a truncated entry behind
        return path

    def has(self, file_name: str | Path) -> bool:
        return self.path(file_name).is_file()

    def load(self, file_name: str | Path) -> np.ndarray:
        """(K, h, w) eigenvectors of one image."""
        path = self.path(file_name)
        if not path.is_file():
            raise FileNotFoundError(
                f"no eigenvectors for {file_name}: {path} does not exist. Build the cache with "
                f"tools/build_eigen_cache.py --dataset <name> --output {self.root}"
            )
        with np.load(path) as data:
            vectors = data["eigenvectors"]
        if vectors.shape[0] < self.num_segments:
            raise ValueError(f"{path} holds {vectors.shape[0]} eigenvectors, {self.num_segments} are needed")
        return vectors[: self.num_segments]

    def segments(self, file_name: str | Path, size: Sequence[int]) -> torch.Tensor:
        """(K, H, W) boolean eigen-segments of one image at `size`: from the `.npz` entry, else from the
        official PNGs `<stem>_k<k>.png` (a pixel is in the segment where the PNG is 255)."""
        if self.has(file_name):
            return eigen_segments(self.load(file_name), size)
        stem = Path(file_name).stem
        pngs = [self.root / f"{stem}_k{k}.png" for k in range(self.num_segments)]
        if not all(p.is_file() for p in pngs):
            self.load(file_name)  # raises, naming the .npz entry and how to build it
        masks = [np.asarray(Image.open(p).convert("L")) == 255 for p in pngs]
        if masks[0].shape != tuple(size):
            raise ValueError(f"eigen-segment {pngs[0]} has size {masks[0].shape}, the image {file_name} {tuple(size)}")
        return torch.from_numpy(np.stack(masks))
