"""The CLIP text tower. Vocabulary embeddings (templates, synonyms, caching) are built on it by
`ovseg_d2.modeling.text_classifiers.CLIPTextClassifier`."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from open_clip.transformer import text_global_pool
from torch import nn


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
