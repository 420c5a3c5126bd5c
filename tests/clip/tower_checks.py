"""Checks of the visual-tower contract (docs/architecture.md, "CLIP (`ovseg_d2.clip`)") that every tower
implementation must pass; imported by the tests of each tower as `tests.clip.tower_checks`."""

from __future__ import annotations

import torch
from torch import nn


def assert_run_blocks_applies_mask_and_override(
    tower, blocks: nn.ModuleList, tokens: torch.Tensor, mask: torch.Tensor, override_index: int
) -> None:
    """`tower.run_blocks(tokens, attn_mask=mask, block_overrides={override_index: f})` equals running
    `blocks` one by one with `mask`, calls `f` (the last block) exactly once with that mask, and
    differs from the unmasked run."""
    seen = []

    def last(block, y, attn_mask):
        seen.append(attn_mask)
        return block(y, attn_mask=attn_mask)

    with torch.no_grad():
        ref = tokens
        for b in blocks:
            ref = b(ref, attn_mask=mask)
        out, _ = tower.run_blocks(tokens, attn_mask=mask, block_overrides={override_index: last})
        assert seen == [mask] and torch.allclose(out, ref, atol=1e-6)
        assert not torch.allclose(tower.run_blocks(tokens)[0], ref, atol=1e-3)
