"""Checkpoints: strict/lenient weight loading (`loading`) and the official-checkpoint converters.

A converter turns the state dict of a method's official release into the state dict of our model
(our module names are ours; the mapping lives only in the converter). Methods register theirs in
their own package: `@register_converter("catseg")`. A converter checks the official file holds every
key it expects (`check_expected_keys`) and logs one line saying what it converted and what it
dropped and why (`conversion_summary`).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from detectron2.utils.registry import Registry

from .loading import (
    NO_WEIGHTS,
    CheckpointMismatchError,
    CheckpointReadError,
    ModelCheckpointer,
    UnsafeCheckpointError,
    check_expected_keys,
    format_key_groups,
    load_checkpoint_file,
    require_inference_weights,
    summarize_incompatible,
)

CONVERTER_REGISTRY = Registry("CHECKPOINT_CONVERTER")
CONVERTER_REGISTRY.__doc__ = "Functions (official_state_dict) -> state dict of our model."

StateDict = dict[str, torch.Tensor]
Converter = Callable[[StateDict], StateDict]


def register_converter(method: str) -> Callable[[Converter], Converter]:
    """Decorator registering `fn` as the converter of `method` (detectron2's Registry names entries
    after the function; converters are looked up by method name). Re-registration is a no-op, so
    re-importing a method package is harmless."""

    def register(fn: Converter) -> Converter:
        if method not in CONVERTER_REGISTRY:
            CONVERTER_REGISTRY._do_register(method, fn)
        return fn

    return register


def extract_state_dict(obj: Any) -> StateDict:
    """Find the state dict inside the usual checkpoint containers (detectron2 {"model": ...},
    mmcv/PyTorch {"state_dict": ...}) and strip a DistributedDataParallel "module." prefix."""
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("not a state dict: expected a mapping of parameter names to tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _import_method(method: str) -> None:
    """Converters live in the method packages; importing one registers its converters. A converter of
    another layout of a method is named `<package>_<layout>` ("catseg_mmseg" lives in `catseg`), so the
    package is the longest "_"-prefix of `method` that can be imported."""
    parts = method.split("_")
    for end in range(len(parts), 0, -1):
        try:
            importlib.import_module(f"ovseg_d2.projects.{'_'.join(parts[:end])}")
            return
        except ModuleNotFoundError:
            continue


def get_converter(method: str) -> Converter:
    _import_method(method)
    if method not in CONVERTER_REGISTRY:
        known = ", ".join(sorted(name for name, _ in CONVERTER_REGISTRY)) or "none"
        raise KeyError(f"no checkpoint converter registered for '{method}' (known: {known})")
    return CONVERTER_REGISTRY.get(method)


def conversion_summary(method: str, num_official: int, num_converted: int, dropped: Mapping[str, Sequence[str]]) -> str:
    """One line: "catseg: 302 official tensors -> 299 of ours; dropped 1 (unused by CAT-Seg): ...".
    The counts differ both ways (fused tensors split, unused ones dropped); `dropped` maps the reason
    to the official keys dropped for it."""
    parts = [f"{method}: {num_official} official tensors -> {num_converted} of ours"]
    for reason, keys in dropped.items():
        if keys:
            names = ", ".join(keys) if len(keys) <= 2 else f"{keys[0]} and {len(keys) - 1} alike"
            parts.append(f"dropped {len(keys)} ({reason}): {names}")
    return "; ".join(parts)


def convert_checkpoint(method: str, checkpoint: Any, *, unsafe_pickle: bool = False, **inputs: Any) -> StateDict:
    """Convert an official checkpoint (a loaded object or a path) into our state dict.

    A path is read with `torch.load(weights_only=True)`; `unsafe_pickle=True` (only for trusted
    files) allows checkpoints that pickle arbitrary Python objects. `inputs` are further files a
    method's converter takes by keyword (TCL's release holds only the masker: `clip_weights=`)."""
    if isinstance(checkpoint, (str, Path)):
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"official checkpoint not found: {path}")
        checkpoint = load_checkpoint_file(path, unsafe_pickle=unsafe_pickle)
    return get_converter(method)(extract_state_dict(checkpoint), **inputs)


__all__ = [
    "CONVERTER_REGISTRY",
    "NO_WEIGHTS",
    "CheckpointMismatchError",
    "CheckpointReadError",
    "ModelCheckpointer",
    "UnsafeCheckpointError",
    "check_expected_keys",
    "conversion_summary",
    "convert_checkpoint",
    "extract_state_dict",
    "format_key_groups",
    "get_converter",
    "load_checkpoint_file",
    "require_inference_weights",
    "register_converter",
    "summarize_incompatible",
]
