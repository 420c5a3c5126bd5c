"""Shared plumbing for the `datasets/prepare_*.py` scripts.

Every script turns a raw, officially distributed dataset into the layout the registrations in
`ovseg_d2/data/datasets/` read. They share: the command line (`--root`, `--workers`), a clear error
when a raw input is missing (naming the archive to download), resumability (an output that exists is
never recomputed), atomic writes (a file appears under its final name only once it is complete,
so an interrupted run never leaves a truncated label map that a later run would take as done), a
progress bar and a final summary.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

WRITTEN, SKIPPED, DROPPED, MISSING = "written", "skipped", "dropped", "missing"


class MissingRawDataError(FileNotFoundError):
    """A raw input of a prepare script is absent; the message says what to download and where."""


def default_root() -> Path:
    """Datasets root as Detectron2 resolves it: $DETECTRON2_DATASETS, default ./datasets."""
    return Path(os.getenv("DETECTRON2_DATASETS", "datasets"))


def parse_args(
    description: str,
    argv: Sequence[str] | None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The common command line; `add_arguments` lets a script add its own options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--root", type=Path, default=None,
        help="datasets root (default: $DETECTRON2_DATASETS, else ./datasets)",
    )
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1),
        help="worker processes for the per-image work (1 = no multiprocessing)",
    )
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    if args.root is None:
        args.root = default_root()
    return args


def require(path: Path, what: str) -> Path:
    """Return `path` if it exists, else raise MissingRawDataError explaining how to obtain it."""
    if not path.exists():
        raise MissingRawDataError(
            f"missing raw input {path}\n  -> {what}\n  (datasets root: set --root or "
            f"$DETECTRON2_DATASETS; see datasets/README.md)"
        )
    return path


def read_ids(list_file: Path) -> list[str]:
    """Image ids from an id-list file: the first token of each non-empty line, reduced to the file
    stem, so both plain id lists and DeepLab-style '/JPEGImages/x.jpg /SegmentationClassAug/x.png'
    lists work."""
    ids = []
    for line in list_file.read_text().splitlines():
        if line.strip():
            ids.append(Path(line.split()[0]).stem)
    return ids


def read_label(path: Path) -> np.ndarray:
    """A single-channel label map as stored: palette PNGs give their indices (not RGB colours)."""
    with Image.open(path) as img:
        array = np.asarray(img)
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel label map, got shape {array.shape}")
    return array


def lut_from_pairs(pairs: dict[int, int], default: int, size: int = 256) -> np.ndarray:
    """A lookup table `lut[raw] = train_id` with every unlisted raw value mapped to `default`;
    uint8 when every value fits (PNG outputs), else uint16 (TIFF outputs)."""
    dtype = np.uint8 if max([default, *pairs.values()]) <= 255 else np.uint16
    lut = np.full(size, default, dtype=dtype)
    for raw, train in pairs.items():
        lut[raw] = train
    return lut


def _encode(path: Path, array: np.ndarray) -> bytes:
    """Encode by suffix: PNG for uint8 label maps, TIFF for uint16 ones (what the 16-bit loaders
    read), JPEG for images (PIL defaults, as the official ADE-847 script writes them)."""
    suffix = path.suffix.lower()
    if suffix == ".png" and array.dtype != np.uint8:
        raise TypeError(f"{path}: PNG label maps must be uint8, got {array.dtype}")
    if suffix in (".tif", ".tiff") and array.dtype != np.uint16:
        raise TypeError(f"{path}: TIFF label maps must be uint16, got {array.dtype}")
    fmt = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG"}[suffix]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to `<name>.tmp-<pid>` then rename: the final name only ever holds a complete file, and
    the temporary name matches no `*.png`/`*.tif`/`*.txt` glob of a loader."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_array(path: Path, array: np.ndarray, drop_value: int | None = None) -> str:
    """Save one output unless it exists (resumable). With `drop_value`, a map holding only that
    value is not written (CAT-Seg drops VOC maps that would be all-ignore). Returns the status."""
    if path.exists():
        return SKIPPED
    if drop_value is not None and bool((array == drop_value).all()):
        return DROPPED
    atomic_write_bytes(path, _encode(path, array))
    return WRITTEN


@dataclass
class Summary:
    """Per-status file counts of one script run (what is printed at the end)."""

    name: str
    counts: Counter = field(default_factory=Counter)

    def add(self, statuses: Iterable[str]) -> None:
        self.counts.update(statuses)

    def __getitem__(self, status: str) -> int:
        return self.counts[status]

    def report(self) -> str:
        parts = [f"{self.counts[WRITTEN]} written",
                 f"{self.counts[SKIPPED]} skipped (already there)"]
        if self.counts[DROPPED]:
            parts.append(f"{self.counts[DROPPED]} not written (all ignore)")
        if self.counts[MISSING]:
            parts.append(f"{self.counts[MISSING]} raw inputs missing")
        return f"[{self.name}] " + ", ".join(parts)


@dataclass(frozen=True)
class Job:
    """One unit of per-image work: its outputs (skipped without loading anything when all exist)
    and the picklable arguments of the worker function."""

    outputs: tuple[Path, ...]
    args: tuple[Any, ...]


def _call(fn_and_args: tuple[Callable[..., Any], tuple[Any, ...]]) -> Any:
    fn, args = fn_and_args
    return fn(*args)


def map_progress(
    fn: Callable[..., Any],
    arg_tuples: Sequence[tuple[Any, ...]],
    workers: int,
    desc: str,
    done: int = 0,
) -> Iterator[Any]:
    """Yield `fn(*args)` for each args tuple, in order, in a process pool when `workers > 1`, with
    a progress bar that starts at `done` (work skipped before the call)."""
    tasks = [(fn, args) for args in arg_tuples]
    with tqdm(total=done + len(tasks), initial=done, desc=desc, unit="img") as bar:
        if workers > 1 and len(tasks) > 1:
            with Pool(workers) as pool:
                for result in pool.imap(_call, tasks, chunksize=8):
                    bar.update()
                    yield result
        else:
            for task in tasks:
                result = _call(task)
                bar.update()
                yield result


def run_jobs(
    summary: Summary,
    desc: str,
    jobs: Sequence[Job],
    fn: Callable[..., list[str]],
    workers: int,
) -> None:
    """Run `fn(*job.args)` (returning one status per output) for every job whose outputs are not
    all there yet; the others count as skipped without reading anything."""
    todo = []
    for job in jobs:
        if all(p.exists() for p in job.outputs):
            summary.add([SKIPPED] * len(job.outputs))
        else:
            todo.append(job.args)
    for statuses in map_progress(fn, todo, workers, desc, done=len(jobs) - len(todo)):
        summary.add(statuses)


def cli(main: Callable[[Sequence[str] | None], Summary]) -> None:
    """Script entry point: runs `main` and prints its summary; a missing raw input ends with its
    explanation and exit status 2, not a traceback."""
    try:
        summary = main(None)
    except MissingRawDataError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(summary.report())
