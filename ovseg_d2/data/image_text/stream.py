"""Streaming image-caption loader: memory independent of the number of pairs.

`ImageTextStream` is a torch IterableDataset; every (rank, DataLoader worker) pair is one consumer.

* `resampled=True` (training): an endless stream; each consumer draws shards (or meta-file lines)
  uniformly with replacement from its own seeded generator, as webdataset's `ResampledShards` does,
  so ranks never run out of data at different times and no epoch bookkeeping is needed.
* `resampled=False`: one pass in which consumer c of C reads shards c, c+C, ... (meta-file lines
  likewise): each sample exactly once; iterating again repeats the same pass (same seed).

Samples go through a shuffle buffer of `shuffle_buffer` raw samples (memory = buffer x encoded
sample size), then the optional cross-image pairing hook, then the mapper.

Bad web data is skipped, never silently: an undecodable image, a sample without image or caption,
or an unreadable or truncated shard is logged as a warning that names the shard and the sample key
(CC3M/CC12M downloads always contain a few; stopping a multi-day run for one of them helps nobody).
`max_consecutive_failures` failures in a row raise, so a wrong image root or a broken copy of the
data fails fast instead of warning forever.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import webdataset as wds
from detectron2.data import build_detection_train_loader
from detectron2.utils import comm

from .sources import (
    CorruptSampleError,
    JsonLinesIndex,
    PathLike,
    expand_shards,
    resolve_dataset_path,
    shard_sample_to_record,
)

logger = logging.getLogger(__name__)

# (anchor record, the meta file's index, this consumer's generator) -> the record paired with it
PairingFn = Callable[[dict[str, Any], JsonLinesIndex, np.random.Generator], dict[str, Any]]


class _FailureGuard:
    """Warn on each skipped item; raise after `limit` failures in a row."""

    def __init__(self, limit: int) -> None:
        self.limit, self.in_a_row = limit, 0

    def failed(self, message: str) -> None:
        self.in_a_row += 1
        logger.warning("image-text stream: skipped %s", message)
        if self.in_a_row >= self.limit:
            raise RuntimeError(f"{self.in_a_row} image-text samples failed in a row, the last: {message}")

    def succeeded(self) -> None:
        self.in_a_row = 0


class ImageTextStream(torch.utils.data.IterableDataset):
    """Mapped image-caption samples from webdataset `shards` (a folder, a brace pattern or a list of
    them) or a JSON-lines `meta_file` (+ `image_root`); relative paths resolve against
    $DETECTRON2_DATASETS. `pairing` (meta files only) adds `"pair"`: the mapped record it returns.
    `rank`/`world_size` default to the process group's; `seed` to a seed shared by all ranks."""

    def __init__(
        self,
        *,
        mapper: Callable[[dict[str, Any]], dict[str, Any]],
        shards: PathLike | Sequence[PathLike] | None = None,
        meta_file: PathLike | None = None,
        image_root: PathLike | None = None,
        shuffle_buffer: int = 1000,
        resampled: bool = True,
        pairing: PairingFn | None = None,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        max_consecutive_failures: int = 100,
    ) -> None:
        super().__init__()
        if (shards is None) == (meta_file is None):
            raise ValueError("give exactly one of shards= (webdataset) and meta_file= (JSON lines)")
        if pairing is not None and shards is not None:
            raise ValueError("a pairing hook needs random access: use a JSON-lines meta_file, not shards")
        self.mapper = mapper
        self.shards = expand_shards(shards) if shards is not None else None
        self.index = None
        if meta_file is not None:
            root = resolve_dataset_path(image_root) if image_root is not None else None
            self.index = JsonLinesIndex(resolve_dataset_path(meta_file), root)
        self.shuffle_buffer = shuffle_buffer
        self.resampled = resampled
        self.pairing = pairing
        self.seed = comm.shared_random_seed() if seed is None else seed
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size
        self.max_consecutive_failures = max_consecutive_failures

    def _consumer(self) -> tuple[int, int]:
        """(this consumer's index, number of consumers) over all ranks and their workers."""
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * workers + worker, self.world_size * workers

    def _positions(self, size: int, consumer: int, consumers: int, rng: np.random.Generator) -> Iterator[int]:
        """Indices into `size` shards or lines that this consumer reads."""
        if self.resampled:
            while True:
                yield int(rng.integers(size))
        if size < consumers:
            raise ValueError(
                f"{size} {'shards' if self.shards else 'lines'} cannot feed {consumers} consumers "
                f"({self.world_size} ranks x {consumers // self.world_size} workers) in one pass"
            )
        yield from range(consumer, size, consumers)

    def _records(
        self, consumer: int, consumers: int, rng: np.random.Generator, guard: _FailureGuard
    ) -> Iterator[dict[str, Any]]:
        if self.index is not None:
            yield from (self.index[i] for i in self._positions(len(self.index), consumer, consumers, rng))
            return

        def handler(exn: Exception) -> bool:  # webdataset appends the shard's URL to exn.args
            url = exn.args[-1] if len(exn.args) > 1 and isinstance(exn.args[-1], str) else "?"
            guard.failed(f"the rest of shard {url}: {type(exn).__name__}: {exn.args[0] if exn.args else exn}")
            return True

        urls = ({"url": self.shards[i]} for i in self._positions(len(self.shards), consumer, consumers, rng))
        for sample in wds.tarfile_to_samples(handler=handler)(urls):
            try:
                yield shard_sample_to_record(sample)
            except CorruptSampleError as e:
                guard.failed(str(e))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        consumer, consumers = self._consumer()
        rng = np.random.default_rng([self.seed, consumer])
        guard = _FailureGuard(self.max_consecutive_failures)
        records = self._records(consumer, consumers, rng, guard)
        if self.shuffle_buffer > 1:
            shuffle_rng = random.Random(int(rng.integers(2**63)))
            records = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=shuffle_rng)(records)
        for record in records:
            try:
                pair = self.pairing(record, self.index, rng) if self.pairing is not None else None
                out = self.mapper(record)
                if pair is not None:
                    out["pair"] = self.mapper(pair)
            except CorruptSampleError as e:
                guard.failed(str(e))
                continue
            guard.succeeded()
            yield out


def build_image_text_train_loader(
    *,
    mapper: Callable[[dict[str, Any]], dict[str, Any]],
    total_batch_size: int,
    shards: PathLike | Sequence[PathLike] | None = None,
    meta_file: PathLike | None = None,
    image_root: PathLike | None = None,
    shuffle_buffer: int = 1000,
    resampled: bool = True,
    pairing: PairingFn | None = None,
    num_workers: int = 0,
    seed: int | None = None,
) -> torch.utils.data.DataLoader:
    """LazyConfig entry point: an `ImageTextStream` batched by Detectron2 (lists of
    `total_batch_size / world_size` mapped dicts; workers seeded by Detectron2)."""
    stream = ImageTextStream(
        mapper=mapper, shards=shards, meta_file=meta_file, image_root=image_root, shuffle_buffer=shuffle_buffer,
        resampled=resampled, pairing=pairing, seed=seed,
    )
    return build_detection_train_loader(
        stream, mapper=None, total_batch_size=total_batch_size, aspect_ratio_grouping=False, num_workers=num_workers
    )
