"""`run.json`: how to rebuild a finished run's model for inference, one file per run folder.

Written by the toy demo and the leaderboard once a run has been evaluated; read by tools/web_demo.py,
which offers every record under its --runs folder as a model. The file is one JSON object:
{"name", "config" (LazyConfig, relative to the repository when inside it, else absolute),
"overrides" (key=value list), "weights" (checkpoint, or null: training-free, the weights the config
builds), "dataset" (what the run was evaluated on, or null)}.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..utils.atomic import write_json_atomic
from ..utils.repo_paths import from_repo, repo_relative

RUN_RECORD_FILE = "run.json"
_KEYS = ("name", "config", "overrides", "weights", "dataset")


@dataclass(frozen=True)
class RunRecord:
    """One run's model: `config` is absolute, `weights` None for a training-free model."""

    name: str
    config: Path
    overrides: tuple[str, ...]
    weights: Path | None
    dataset: str | None

    @classmethod
    def of(
        cls, name: str, config: Path | str, overrides: Sequence[str], weights: Path | str | None, dataset: str | None
    ) -> RunRecord:
        """A record with its paths resolved; `weights` "none" (the checkpoint-less spelling of the
        configs) is a training-free model too."""
        return cls(
            name=name,
            config=Path(config).resolve(),
            overrides=tuple(overrides),
            weights=None if weights in (None, "none") else Path(weights).resolve(),
            dataset=dataset,
        )

    def write(self, folder: Path) -> Path:
        """Write `folder/run.json` atomically (a reader never sees half a record); returns its path."""
        path = folder / RUN_RECORD_FILE
        write_json_atomic(path, {
            "name": self.name,
            "config": repo_relative(self.config),
            "overrides": list(self.overrides),
            "weights": None if self.weights is None else str(self.weights),
            "dataset": self.dataset,
        })
        return path

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        """The record in `path`; ValueError naming the file if it is not one."""
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable JSON run record ({err})") from err
        missing = [key for key in _KEYS if not isinstance(record, dict) or key not in record]
        if missing:
            raise ValueError(f"{path}: run record without {missing} (expected keys {list(_KEYS)})")
        if not isinstance(record["overrides"], list):
            raise ValueError(f"{path}: 'overrides' must be a list of key=value strings, not {record['overrides']!r}")
        return cls(
            name=str(record["name"]),
            config=from_repo(record["config"]),
            overrides=tuple(str(o) for o in record["overrides"]),
            weights=None if record["weights"] is None else Path(record["weights"]),
            dataset=record["dataset"],
        )
