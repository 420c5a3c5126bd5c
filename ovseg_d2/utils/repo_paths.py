"""The repository root and the one convention for naming files in it (configs, recorded in run records
and leaderboard entries): relative to the root when inside it, absolute otherwise."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_relative(path: Path | str) -> str:
    """`path` relative to the repository root (POSIX form) when inside it, else its absolute form."""
    path = Path(path).resolve()
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)


def from_repo(path: Path | str) -> Path:
    """The absolute path of a name written by :func:`repo_relative` (or any absolute path)."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path
