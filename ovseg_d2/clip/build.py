"""Build open_clip CLIP models from a config name and load local weights.

Nothing here downloads: weights are local files (OpenAI `.pt` JIT archives or state dicts, open_clip
checkpoints, safetensors). Models are built by calling `open_clip.model.CLIP(**cfg)` directly so that
our own configs never touch open_clip's global config registry.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import open_clip
import torch
from open_clip.model import CLIP

from .finetune import fuse_qkv_state_dict
from .visual import interpolate_positional_embedding

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"

# Scalars stored in OpenAI's checkpoints next to the weights; not parameters of the model.
_OPENAI_SCALAR_KEYS = ("input_resolution", "context_length", "vocab_size")


def get_model_config(model: str | os.PathLike) -> dict[str, Any]:
    """Resolve `model` (our config name, a JSON path, or an open_clip config name) to a config dict."""
    own = CONFIG_DIR / f"{model}.json"
    path = Path(model)
    if own.is_file() or (str(model).endswith(".json") and path.is_file()):
        return json.loads((own if own.is_file() else path).read_text())
    cfg = open_clip.get_model_config(str(model))
    if cfg is None:
        raise KeyError(
            f"Unknown CLIP model {model!r}: not one of ours ({', '.join(p.stem for p in CONFIG_DIR.glob('*.json'))}), "
            "not a JSON file, and not an open_clip config name"
        )
    return json.loads(json.dumps(cfg))  # deep copy: never hand out open_clip's registry entries


def build_clip(
    model: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    *,
    image_size: int | tuple[int, int] | None = None,
    pos_interpolation: str = "bicubic",
    device=None,
) -> CLIP:
    """Float32 open_clip `CLIP` from a config; `weights=None` keeps the random init.

    `image_size` builds the vision tower for another input size (Cascade-CLIP: ViT-B/16 at 512) and
    resizes a loaded positional table of another grid to it once, with `pos_interpolation`
    ("bilinear" for Cascade-CLIP; see `interpolate_positional_embedding`). Without `image_size` a
    table of another grid is an error.
    """
    if pos_interpolation not in ("bicubic", "bilinear"):
        raise ValueError(f"pos_interpolation must be 'bicubic' or 'bilinear', got {pos_interpolation!r}")
    cfg = get_model_config(model)
    cfg = {k: v for k, v in cfg.items() if k not in ("custom_text", "hf_tokenizer_name")}
    if image_size is not None:
        patch = cfg["vision_cfg"]["patch_size"]
        if any(side % patch for side in _pair(image_size)):
            raise ValueError(f"image_size {image_size} of {model} is not a multiple of its patch size {patch}")
        cfg["vision_cfg"] = {**cfg["vision_cfg"], "image_size": image_size}
    clip = CLIP(**cfg)
    if weights is not None:
        load_clip_weights(clip, weights, resize_positional=pos_interpolation if image_size is not None else None)
    clip = clip.float()
    return clip.to(device) if device is not None else clip


def get_tokenizer(model: str | os.PathLike):
    """open_clip's tokenizer for `model` (the BPE vocabulary ships with open_clip: no network)."""
    cfg = get_model_config(model)
    text_cfg = cfg.get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name"):
        return open_clip.get_tokenizer(str(model))
    return open_clip.tokenizer.SimpleTokenizer(context_length=text_cfg.get("context_length", 77))


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a CLIP state dict from an OpenAI `.pt` (JIT archive or plain), an open_clip checkpoint
    (`{"state_dict": ...}` or raw, "module." prefixes stripped) or a `.safetensors` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError(f"Reading {path} needs the `safetensors` package (pip install safetensors)") from e
        sd: Any = load_file(str(path), device="cpu")
    elif _is_torchscript_archive(path):
        with warnings.catch_warnings():  # OpenAI ships TorchScript; torch's deprecation notice is not actionable
            warnings.simplefilter("ignore", FutureWarning)
            sd = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path} is not a readable CLIP checkpoint: {e}") from e
    if isinstance(sd, Mapping) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} does not hold a CLIP state dict (a mapping of names to tensors)")
    sd = {k.removeprefix("module."): v for k, v in sd.items() if k not in _OPENAI_SCALAR_KEYS}
    if any(k.endswith("attn.q_proj_weight") for k in sd):
        sd = fuse_qkv_state_dict(sd)  # CAT-Seg-style split q/k/v (see finetune.split_attention_projections)
    return sd


def load_clip_weights(
    clip: torch.nn.Module, weights: str | os.PathLike, *, resize_positional: str | None = None
) -> None:
    """Strictly load `weights` into `clip`; errors name the file and every offending key.

    A visual positional table of another grid is resized to the model's with `resize_positional`
    ("bicubic" / "bilinear", computed in float32) or, when None, refused.
    """
    sd = read_state_dict(weights)
    own = clip.state_dict()
    pos_key = "visual.positional_embedding"
    if pos_key in sd and pos_key in own and sd[pos_key].shape != own[pos_key].shape:
        if resize_positional is None or sd[pos_key].shape[1:] != own[pos_key].shape[1:]:
            raise ValueError(
                f"{weights}: {pos_key} has shape {tuple(sd[pos_key].shape)} but the model's table is "
                f"{tuple(own[pos_key].shape)}: the checkpoint was trained at another resolution. Build the model at "
                "the checkpoint's image size and let CLIPVisionTower resize the table at runtime, or pass "
                "build_clip(..., image_size=...) to resize it once on load."
            )
        src = _square_grid(sd[pos_key].shape[0] - 1, f"{weights}: {pos_key}")
        dst = tuple(clip.visual.grid_size)
        sd[pos_key] = interpolate_positional_embedding(sd[pos_key].float(), src, dst, resize_positional)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        lines = [f"Weights {weights} do not match the CLIP model:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(keys))
        raise ValueError("\n".join(lines))
    clip.load_state_dict(sd, strict=True)  # copy_ casts fp16 OpenAI tensors to the model's dtype


def _is_torchscript_archive(path: Path) -> bool:
    """TorchScript zips carry compiled code (`*/constants.pkl`); `torch.save` zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith("/constants.pkl") for name in zf.namelist())


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


def _square_grid(rows: int, what: str) -> tuple[int, int]:
    """Checkpoints do not record their grid; the pretraining tables are square."""
    side = math.isqrt(rows)
    if side * side != rows:
        raise ValueError(f"{what} has {rows} patch rows, not a square grid: cannot tell its shape to resize it")
    return side, side
