"""Official-checkpoint converters: one registry, one converter per method.

A converter turns the state dict of a method's official release into the state dict of our model
(our module names are ours; the mapping lives only in the converter). Methods register theirs in
their own package: `@register_converter("catseg")`.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

import torch
from detectron2.utils.registry import Registry

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
    """Converters live in the method packages; importing one registers its converter."""
    try:
        importlib.import_module(f"ovseg_d2.projects.{method}")
    except ModuleNotFoundError:
        pass


def get_converter(method: str) -> Converter:
    _import_method(method)
    if method not in CONVERTER_REGISTRY:
        known = ", ".join(sorted(name for name, _ in CONVERTER_REGISTRY)) or "none"
        raise KeyError(f"no checkpoint converter registered for '{method}' (known: {known})")
    return CONVERTER_REGISTRY.get(method)


def convert_checkpoint(method: str, checkpoint: Any) -> StateDict:
    """Convert an official checkpoint (a loaded object or a path) into our state dict."""
    if isinstance(checkpoint, (str, Path)):
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"official checkpoint not found: {path}")
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return get_converter(method)(extract_state_dict(checkpoint))
