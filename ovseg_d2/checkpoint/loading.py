"""Loading weights into a model without silent surprises.

* Files are read with ``torch.load(weights_only=True)``: a checkpoint holding arbitrary Python objects
  is refused (it could run code) unless the caller opts in with ``unsafe_pickle=True``.
* Missing, unexpected and mis-shaped keys are summarised grouped by prefix, so that 128 keys read as
  a few lines. :class:`ModelCheckpointer` raises :class:`CheckpointMismatchError` with that summary
  when ``strict`` (evaluation, demo) and logs it as a warning otherwise (fine-tuning init).
* Evaluation and the demo require weights (:func:`require_inference_weights`): :data:`NO_WEIGHTS`
  (``"none"``) is the explicit way to run the model as the config builds it. The checkpointer reads
  ``"none"`` like ``""``: nothing to load.
"""
from __future__ import annotations

import logging
import os
import pickle
from collections import defaultdict
from typing import Any, Iterable, Sequence

import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _IncompatibleKeys
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "NO_WEIGHTS",
    "CheckpointMismatchError",
    "CheckpointReadError",
    "ModelCheckpointer",
    "check_expected_keys",
    "UnsafeCheckpointError",
    "format_key_groups",
    "load_checkpoint_file",
    "require_inference_weights",
    "summarize_incompatible",
]

# `train.init_checkpoint=none` / `--weights none`: run the model with the weights its config builds
# (random, except parts the config loads itself, e.g. `model.clip_weights`).
NO_WEIGHTS = "none"
STRICT_OPT_OUT = "train.strict_load=False"
_MAX_GROUPS = 8


class CheckpointReadError(RuntimeError):
    """The file exists but is not a readable checkpoint (truncated, empty, not a torch file)."""


class UnsafeCheckpointError(CheckpointReadError):
    """The file holds Python objects other than tensors and containers; loading it could run code."""


class CheckpointMismatchError(RuntimeError):
    """Strict loading found missing, unexpected or mis-shaped keys."""


def load_checkpoint_file(path: str | os.PathLike, *, unsafe_pickle: bool = False) -> Any:
    """``torch.load`` on the CPU with ``weights_only=True``; errors name the file.

    ``unsafe_pickle=True`` allows arbitrary pickled objects: only for files you trust.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
    except pickle.UnpicklingError as e:
        if unsafe_pickle or "Weights only load failed" not in str(e):
            raise CheckpointReadError(f"cannot read checkpoint {path}: {e}") from e
        # torch's message is long; its "WeightsUnpickler error" line names the refused object.
        reason = next((line.strip() for line in str(e).splitlines() if "WeightsUnpickler" in line), "")
        raise UnsafeCheckpointError(
            f"{path} holds Python objects besides tensors ({reason}); refusing to unpickle it, since "
            "that can run arbitrary code. If you trust the file, convert it once with "
            "`tools/convert_checkpoint.py ... --unsafe-pickle` and load the converted file."
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointReadError(f"cannot read checkpoint {path} (truncated or not a torch file?): {e}") from e


def _pattern(key: str) -> tuple[str, ...]:
    """Dotted components with block indices replaced by "*", so that repeated blocks group together."""
    return tuple("*" if part.isdigit() else part for part in key.split("."))


def _common_prefix(patterns: list[tuple[str, ...]]) -> tuple[str, ...]:
    prefix = []
    for parts in zip(*patterns):
        if len(set(parts)) != 1:
            break
        prefix.append(parts[0])
    return tuple(prefix)


def _split(group: list[str]) -> list[list[str]]:
    """`group` split by the first component after the longest common prefix of its patterns."""
    depth = len(_common_prefix([_pattern(k) for k in group]))
    children: dict[str, list[str]] = defaultdict(list)
    for key in group:
        pattern = _pattern(key)
        children[pattern[depth] if depth < len(pattern) else ""].append(key)
    return list(children.values())


def format_key_groups(keys: Iterable[str], details: dict[str, str] | None = None) -> list[str]:
    """A few lines for any number of keys: "aggregator.layers.*.spatial.* (96 keys, e.g. ...)", or the
    key itself when it is alone in its group (with its entry of `details`, e.g. shapes).

    Keys are grouped by their longest common prefix (block indices as "*") and the groups are refined
    one level at a time, all groups together, while the number of lines stays within 8.
    """
    groups: list[list[str]] = [sorted(set(keys))] if keys else []
    if groups and len(groups[0]) > 1 and not _common_prefix([_pattern(k) for k in groups[0]]):
        groups = _split(groups[0])  # no shared prefix at all: the top-level names are the groups
    while True:
        refined = [child for group in groups for child in (_split(group) if len(group) > 1 else [group])]
        if len(refined) == len(groups) or len(refined) > _MAX_GROUPS:
            break
        groups = refined
    groups.sort(key=lambda g: (-len(g), g[0]))
    rest = groups[_MAX_GROUPS - 1 :] if len(groups) > _MAX_GROUPS else []
    lines = []
    for group in groups[: len(groups) - len(rest)]:
        first = group[0]
        note = f": {details[first]}" if details and first in details else ""
        if len(group) == 1:
            lines.append(f"{first}{note}")
            continue
        prefix = _common_prefix([_pattern(k) for k in group])
        shown = ".".join(prefix) + (".*" if len(prefix) < len(_pattern(first)) else "")
        lines.append(f"{shown} ({len(group)} keys, e.g. {first}{note})")
    if rest:
        lines.append(f"... and {sum(len(g) for g in rest)} more keys under {len(rest)} other prefixes")
    return lines


def summarize_incompatible(incompatible: _IncompatibleKeys, model: nn.Module, source: str) -> str:
    """The grouped summary of a load, empty when every key matched."""
    missing = list(incompatible.missing_keys)
    unexpected = list(incompatible.unexpected_keys)
    shapes = {k: f"checkpoint {tuple(c)} vs model {tuple(m)}" for k, c, m in incompatible.incorrect_shapes}
    # detectron2 drops mis-shaped keys before loading, so they also come back as missing.
    missing = [k for k in missing if k not in shapes]
    if not (missing or unexpected or shapes):
        return ""
    model_keys = set(model.state_dict())
    loaded = len(model_keys) - len(missing) - len(shapes)
    lines = [f"{source}: {loaded} of {len(model_keys)} model keys loaded"]
    if loaded == 0:
        lines[0] += " (no key in common: a checkpoint of another method or config?)"
    for title, keys, details in (
        ("missing in the checkpoint", missing, None),
        ("unexpected (not in the model)", unexpected, None),
        ("shape mismatch", list(shapes), shapes),
    ):
        if keys:
            lines.append(f"  {title}: {len(keys)} key{'s' if len(keys) > 1 else ''}")
            lines += [f"    {line}" for line in format_key_groups(keys, details)]
    return "\n".join(lines)


class ModelCheckpointer(DetectionCheckpointer):
    """detectron2's checkpointer, reading files with ``weights_only=True`` and reporting incompatible
    keys as one grouped summary: raised as :class:`CheckpointMismatchError` when ``strict``, logged as
    a warning otherwise. A path that does not exist is an error; `"none"` reads as `""` (no checkpoint)."""

    def __init__(self, model: nn.Module, save_dir: str = "", *, strict: bool = False, **checkpointables: Any):
        super().__init__(model, save_dir, **checkpointables)
        self.strict = strict
        self._source = ""

    def load(self, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if path == NO_WEIGHTS:
            path = ""
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        self._source = path
        return super().load(path, *args, **kwargs)

    def _torch_load(self, f: str) -> Any:
        return load_checkpoint_file(f)

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys) -> None:
        summary = summarize_incompatible(incompatible, self.model, self._source)
        if not summary:
            return
        if self.strict:
            raise CheckpointMismatchError(
                f"{summary}\nThe checkpoint does not match the model. To load only the matching keys "
                f"(the rest keep their initial values), pass {STRICT_OPT_OUT}."
            )
        logger.warning("Partial load (training init is lenient):\n%s", summary)


def require_inference_weights(weights: str | None) -> str:
    """The weights a model is evaluated or demonstrated with: a path, or :data:`NO_WEIGHTS` (logged
    as a warning) to keep the weights the config builds. Empty / None is an error naming both."""
    if not weights:
        raise ValueError(
            "no weights to evaluate: set train.init_checkpoint=PATH (demo: --weights PATH); to run the "
            "model as the config builds it (random weights except parts the config loads itself, such "
            f"as model.clip_weights), pass train.init_checkpoint={NO_WEIGHTS} (demo: --weights {NO_WEIGHTS})"
        )
    if weights == NO_WEIGHTS:
        logger.warning("Running the model without a checkpoint (%s): weights as built by the config.", NO_WEIGHTS)
    return weights


def check_expected_keys(found: Iterable[str], expected: Sequence[str] | set[str], source: str) -> None:
    """Raise a ValueError naming (grouped) every expected key absent from `found`."""
    missing = set(expected) - set(found)
    if missing:
        lines = "\n".join(f"  {line}" for line in format_key_groups(missing))
        raise ValueError(f"{source} is incomplete: {len(missing)} of {len(set(expected))} expected keys missing:\n{lines}")
