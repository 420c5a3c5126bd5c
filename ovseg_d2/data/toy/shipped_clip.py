"""The toy world's shipped tiny-CLIP weights: a compact file per pretraining seed, expanded on demand
into a normal open_clip checkpoint (`{"state_dict": ...}`) that `build_clip` loads.

Only a few hundred of the 49,408 token-embedding rows are ever trained on the toy captions (the
BPE vocabulary is open_clip's), so the compact file keeps the rows that `used_token_ids` lists and
restores every other row as zeros; the exported checkpoint that the documented scores were measured
on is already zero there (`compact_state_dict` zeroes the rest), so expanding is exact.

    ovseg_d2/data/toy/weights/tiny_clip_seed<N>.pt      made by tools/pretrain_toy_clip.py --pretrain --ship
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torch

from ...checkpoint import load_checkpoint_file
from ...utils.atomic import torch_save_atomic

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TOKEN_EMBEDDING = "token_embedding.weight"
FORMAT = "ovseg_d2.toy.compact_clip/1"


def shipped_weights(seed: int) -> Path:
    """Path of the shipped compact weights of pretraining seed `seed` (may not exist)."""
    return WEIGHTS_DIR / f"tiny_clip_seed{seed}.pt"


def used_token_ids(tokenizer, texts: Iterable[str]) -> torch.Tensor:
    """Sorted unique token ids of `texts` (start/end tokens included; padding 0 excluded)."""
    ids = torch.unique(tokenizer(list(texts)))
    return ids[ids != 0]


def zero_unused_token_rows(state_dict: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """A copy of `state_dict` whose token-embedding rows outside `keep` are zero: rows never seen in
    training hold only their random init, which no toy prompt should depend on."""
    table = state_dict[TOKEN_EMBEDDING]
    zeroed = torch.zeros_like(table)
    zeroed[keep] = table[keep]
    return {**state_dict, TOKEN_EMBEDDING: zeroed}


def compact_state_dict(state_dict: dict[str, torch.Tensor]) -> dict:
    """The compact form of a CLIP state dict: the token table's non-zero rows only (fp32)."""
    table = state_dict[TOKEN_EMBEDDING]
    rows = torch.nonzero(table.abs().sum(dim=1)).flatten()
    return {
        "format": FORMAT,
        "state_dict": {k: v for k, v in state_dict.items() if k != TOKEN_EMBEDDING},
        "token_rows": rows,
        "token_values": table[rows].clone(),
        "token_table_shape": list(table.shape),
    }


def expand_compact_state_dict(compact: dict) -> dict[str, torch.Tensor]:
    """The full CLIP state dict of a compact one (other token rows zero)."""
    if compact.get("format") != FORMAT:
        raise ValueError(f"not a compact toy CLIP file (format {compact.get('format')!r}, expected {FORMAT!r})")
    table = torch.zeros(compact["token_table_shape"], dtype=compact["token_values"].dtype)
    table[compact["token_rows"]] = compact["token_values"]
    return {**compact["state_dict"], TOKEN_EMBEDDING: table}


def expand_shipped_weights(compact_file: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write the open_clip checkpoint `{"state_dict": ...}` of a compact file to `output`."""
    compact = load_checkpoint_file(compact_file)
    return torch_save_atomic({"state_dict": expand_compact_state_dict(compact)}, output)
