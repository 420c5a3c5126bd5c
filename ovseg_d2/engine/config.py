"""LazyConfig loading with checked command-line overrides, and the start-up checks of a config.

Overrides are Hydra's grammar (detectron2's `LazyConfig.apply_overrides`): `key=value` changes an
existing key and is rejected, with a "did you mean" suggestion, when the key is neither in the config
nor a parameter of the LazyCall target it belongs to (`model.window=256` for a `L(CATSeg)` model).
New keys need the explicit Hydra forms `+key=value` (add; the key must not exist yet) or
`++key=value` (add or change).
"""
from __future__ import annotations

import argparse
import difflib
import inspect
import sys
from typing import Any, Iterator, Sequence

from detectron2.config import LazyConfig
from detectron2.data import DatasetCatalog
from detectron2.utils.registry import locate
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf

__all__ = ["check_dataset_names", "check_overrides", "load_config", "parse_args_anywhere"]


def load_config(path: str, overrides: Sequence[str]) -> DictConfig:
    """`LazyConfig.load(path)` with `overrides` checked (:func:`check_overrides`) and applied."""
    cfg = LazyConfig.load(path)
    check_overrides(cfg, overrides)
    return LazyConfig.apply_overrides(cfg, list(overrides))


def _target_parameters(node: dict) -> set[str]:
    """Named parameters of a LazyCall node's `_target_` (not *args / **kwargs: those cannot be checked)."""
    target = node.get("_target_")
    if isinstance(target, str):
        target = locate(target)
    if not callable(target):
        return set()
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _config_keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a plain-container config, plus the parameters of its LazyCall targets."""
    if not isinstance(node, dict):
        return
    names = set(node) | (_target_parameters(node) if "_target_" in node else set())
    for name in sorted(names - {"_target_"}):
        yield prefix + name
        yield from _config_keys(node.get(name), prefix + name + ".")


def _key_exists(tree: dict, key: str) -> bool:
    node: Any = tree
    parts = key.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            # An argument the config leaves at its default: a parameter of the LazyCall target.
            return i == len(parts) - 1 and isinstance(node, dict) and part in _target_parameters(node)
    return True


def check_overrides(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Reject overrides of keys that do not exist (suggesting close matches) and `+key` additions of
    keys that do exist. Raises ValueError for unparsable overrides, KeyError for wrong keys."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as e:
        raise ValueError(f"cannot parse the config overrides {list(overrides)}: {e}") from e
    tree = OmegaConf.to_container(cfg, resolve=False)
    for override in parsed:
        key = override.key_or_group
        exists = _key_exists(tree, key)
        if override.is_add() and exists:
            raise KeyError(f"override '+{key}=...' adds a key that already exists: drop the '+' to change it")
        if override.is_add() or override.is_force_add() or override.is_delete() or exists:
            continue
        close = difflib.get_close_matches(key, list(_config_keys(tree)), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise KeyError(
            f"config override '{key}=...': no key '{key}' in the config. {hint}"
            f"To add a new key on purpose, write '+{key}=...'."
        )


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def check_dataset_names(cfg: DictConfig) -> None:
    """Fail before any training or evaluation when a dataset named by `dataloader.test_datasets` or
    `dataloader.train.dataset_names` is not registered in DatasetCatalog (close matches suggested)."""
    dataloader = cfg.get("dataloader") or {}
    named = {"dataloader.test_datasets": _names(dataloader.get("test_datasets"))}
    train = dataloader.get("train")
    if isinstance(train, DictConfig) and "dataset_names" in train:
        named["dataloader.train.dataset_names"] = _names(train.dataset_names)
    registered = DatasetCatalog.list()
    problems = []
    for key, names in named.items():
        for name in names:
            if name not in registered:
                close = difflib.get_close_matches(name, registered, n=3, cutoff=0.6)
                problems.append(f"  {key}: '{name}'" + (f" (close: {', '.join(close)})" if close else ""))
    if problems:
        raise KeyError(
            "unregistered dataset name(s):\n" + "\n".join(problems) + "\nRegistered names are listed in the "
            "README's Datasets section (DatasetCatalog.list() in Python)."
        )


def _option_values(action: argparse.Action, rest: list[str]) -> int:
    """How many of the tokens in `rest` an option with `action` consumes."""
    def is_value(token: str) -> bool:
        return not token.startswith("-") and "=" not in token

    if action.nargs == 0:
        return 0
    if action.nargs is None:
        return 1
    if isinstance(action.nargs, int):
        return action.nargs
    if action.nargs == "?":
        return 1 if rest and is_value(rest[0]) else 0
    count = 0  # "+" / "*": up to the next option or key=value override
    while count < len(rest) and is_value(rest[count]):
        count += 1
    return count


def parse_args_anywhere(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse with `parser` (whose last positional is detectron2's REMAINDER `opts`), accepting flags
    after the `key=value` overrides: `train.max_iter=5 --resume` works like `--resume train.max_iter=5`.

    Options (with their values) are moved before the first override; everything else is an override.
    """
    tokens = list(sys.argv[1:] if argv is None else argv)
    # argparse has no public lookup of an option string's action.
    options: dict[str, argparse.Action] = parser._option_string_actions
    flags: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        action = options.get(token.split("=", 1)[0]) if token.startswith("-") else None
        if action is None and not token.startswith("-"):
            overrides.append(token)
            i += 1
            continue
        # Known options take their values; unknown ones are left to argparse to report.
        count = 0 if action is None or "=" in token else _option_values(action, tokens[i + 1 :])
        flags += tokens[i : i + 1 + count]
        i += 1 + count
    return parser.parse_args(flags + overrides)
