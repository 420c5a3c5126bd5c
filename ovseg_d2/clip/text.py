"""CLIP text tower, class-name parsing and vocabulary embeddings with a per-instance cache.

Class entries are strings where ", " (comma + space) separates synonyms; a bare "," does not split.
Prompts are built from the entries verbatim (no stripping): the official code bases do so, and the
difference is visible ("bed " + "a photo of {}s." gives "a photo of bed s.").
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

SYNONYM_SEPARATOR = ", "


def split_synonyms(entry: str, *, strip: bool = True) -> list[str]:
    """Split a class entry on ", " only ("dog,puppy" stays one name); strip each part by default."""
    parts = entry.split(SYNONYM_SEPARATOR)
    return [p.strip() for p in parts] if strip else parts


class CLIPTextTower(nn.Module):
    """The text half of an open_clip `CLIP`, registered under open_clip's names (`token_embedding`,
    `positional_embedding`, `transformer`, `ln_final`, `text_projection`), so it can be trained,
    moved and checkpointed without the vision half."""

    def __init__(
        self, clip_model: nn.Module, tokenizer: Callable[[Sequence[str]], torch.Tensor], chunk_size: int = 256
    ):
        super().__init__()
        self.token_embedding = clip_model.token_embedding
        self.positional_embedding = clip_model.positional_embedding
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)
        self.pool_type = getattr(clip_model, "text_pool_type", "argmax")
        self.eos_token_id = getattr(clip_model, "text_eos_id", None)
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts)).to(self.token_embedding.weight.device)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """open_clip `CLIP.encode_text` (EOT pooling, ln_final, projection; not normalised)."""
        cast_dtype = self.transformer.get_cast_dtype()
        x = self.token_embedding(tokens).to(cast_dtype)
        x = x + self.positional_embedding.to(cast_dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_token_id)
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection if self.text_projection is not None else x

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, E) raw embeddings of `texts`, encoded in chunks of `chunk_size`."""
        if not texts:
            raise ValueError("encode() needs at least one text")
        tokens = self.tokenize(texts)
        return torch.cat([self.encode_tokens(c) for c in tokens.split(self.chunk_size)], dim=0)


def embed_vocabulary(
    tower: CLIPTextTower,
    class_entries: Sequence[str],
    templates: Sequence[str],
    *,
    synonyms: str = "first",
    template_reduce: str = "mean_then_normalize",
    normalize: bool = True,
    keep_templates: bool = False,
) -> torch.Tensor:
    """Class embeddings from (entries x templates x synonyms) prompts, encoded in one batch.

    synonyms: "first" (CAT-Seg) uses the part before the first ", "; "mean" averages all synonyms.
    template_reduce: how prompt embeddings (templates and synonyms) are averaged:
      "mean_then_normalize" (TCL, OVSegmentor): mean of raw embeddings, then L2-normalise;
      "normalize_then_mean" (CLIP zero-shot, Cascade-CLIP): normalise each, mean, normalise again.
    keep_templates: return (N, P, E) (synonyms reduced, each template normalised if `normalize`).
    Returns (N, E) otherwise.
    """
    if synonyms not in ("first", "mean"):
        raise ValueError(f"synonyms must be 'first' or 'mean', got {synonyms!r}")
    if template_reduce not in ("mean_then_normalize", "normalize_then_mean"):
        raise ValueError(f"Unknown template_reduce {template_reduce!r}")
    if not templates:
        raise ValueError("At least one template is needed")
    names = [split_synonyms(e, strip=False) for e in class_entries]
    if synonyms == "first":
        names = [n[:1] for n in names]
    prompts = [t.format(s) for n in names for t in templates for s in n]
    raw = tower.encode(prompts)

    per_prompt = F.normalize(raw, dim=-1) if template_reduce == "normalize_then_mean" else raw
    out, start = [], 0
    for n in names:
        count = len(templates) * len(n)
        block = per_prompt[start : start + count].reshape(len(templates), len(n), -1)
        start += count
        out.append(block.mean(dim=1) if keep_templates else block.mean(dim=(0, 1)))
    emb = torch.stack(out)
    return F.normalize(emb, dim=-1) if normalize else emb


class TextEmbedder:
    """Vocabulary embeddings with a recipe fixed at construction, cached per instance.

    The cache key holds the identity, `_version` and storage of every text parameter, so in-place
    updates (optimizer steps, load_state_dict) invalidate it, plus the vocabulary, templates, recipe,
    device and dtype. While the text tower is being trained (grad enabled and a text parameter
    requires grad) the cache is bypassed so each call builds a fresh graph. `encode_calls` counts
    actual encoder runs.
    """

    def __init__(
        self,
        tower: CLIPTextTower,
        templates: Sequence[str],
        *,
        synonyms: str = "first",
        template_reduce: str = "mean_then_normalize",
        normalize: bool = True,
        keep_templates: bool = False,
    ):
        self.tower = tower
        self.templates = tuple(templates)
        self.recipe = dict(
            synonyms=synonyms, template_reduce=template_reduce, normalize=normalize, keep_templates=keep_templates
        )
        self._cache: dict[tuple, torch.Tensor] = {}
        self.encode_calls = 0

    def _weights_key(self) -> tuple:
        return tuple((id(p), p._version, p.data_ptr()) for p in self.tower.parameters())

    def clear_cache(self) -> None:
        self._cache.clear()

    def __call__(self, class_entries: Sequence[str]) -> torch.Tensor:
        params = list(self.tower.parameters())
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            self.encode_calls += 1
            return embed_vocabulary(self.tower, class_entries, self.templates, **self.recipe)
        weights_key = self._weights_key()
        key = (
            weights_key,
            tuple(class_entries),
            self.templates,
            tuple(sorted(self.recipe.items())),
            params[0].device,
            params[0].dtype,
        )
        cached = self._cache.get(key)
        if cached is None:
            with torch.no_grad():
                cached = embed_vocabulary(self.tower, class_entries, self.templates, **self.recipe)
            self.encode_calls += 1
            self._cache = {k: v for k, v in self._cache.items() if k[0] == weights_key}
            self._cache[key] = cached
        return cached
