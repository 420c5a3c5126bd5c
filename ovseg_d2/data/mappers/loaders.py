"""Loader builders short enough to be one `L(...)` call in a LazyConfig.

Training loaders are resumable: every random choice of the data pipeline is a pure function of
(seed, position in the sample stream), so a run restarted at iteration `start_iter` sees exactly
the batches and augmentations of the uninterrupted run, whatever `num_workers` (see
docs/architecture.md, "Exact resume").
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from detectron2.data import (
    DatasetFromList,
    MetadataCatalog,
    build_detection_test_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.build import trivial_batch_collator
from detectron2.utils import comm
from torch.utils.data import DataLoader, Dataset, Sampler

from .sem_seg import SemSegDatasetMapper, build_test_augmentations, build_train_augmentations

Mapper = Callable[[dict[str, Any]], Any]

# Independent seed streams derived from one run seed (the `stream` argument of `derive_seed`).
EPOCH_PERMUTATION, SAMPLE_AUGMENTATION, TRAINING_STEP, MODEL_INIT = 0, 1, 2, 3


def derive_seed(seed: int, stream: int, *position: int) -> int:
    """A 32-bit seed that is a pure function of (seed, stream, position...), statistically
    independent across positions (NumPy `SeedSequence` hashing)."""
    return int(np.random.SeedSequence([seed, stream, *position]).generate_state(1)[0])


@contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Python, NumPy and torch (CPU) global RNGs seeded with `seed` inside the block and restored
    after it: Detectron2 augmentations draw from these global RNGs."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


class StreamBatchSampler(Sampler[list[tuple[int, int]]]):
    """Infinite per-rank batches of `(record index, stream position)` keys, from batch `start_iter`.

    The global stream is a pure function of `seed`: position g holds record `perm_e[g % N]`, with
    `perm_e` the permutation of epoch e = g // N drawn from (seed, e) (identity without `shuffle`).
    Global batch n is positions [n * T, (n + 1) * T) for `total_batch_size` T, and each rank takes
    its contiguous share, so batch n depends on neither `num_workers` nor (apart from its split)
    the number of processes, and resuming at `start_iter` skips the consumed batches unread.
    """

    def __init__(
        self,
        num_records: int,
        total_batch_size: int,
        *,
        seed: int,
        start_iter: int = 0,
        shuffle: bool = True,
    ):
        world_size = comm.get_world_size()
        if num_records <= 0:
            raise ValueError("training loader: the dataset has no records")
        if total_batch_size <= 0 or total_batch_size % world_size:
            raise ValueError(
                f"total_batch_size={total_batch_size} must be a positive multiple of the "
                f"number of processes ({world_size})"
            )
        self.num_records = num_records
        self.batch_size = total_batch_size // world_size
        self.total_batch_size = total_batch_size
        self.seed = seed
        self.start_iter = start_iter
        self.shuffle = shuffle
        self.rank = comm.get_rank()

    def permutation(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_records))
        generator = torch.Generator().manual_seed(derive_seed(self.seed, EPOCH_PERMUTATION, epoch))
        return torch.randperm(self.num_records, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, order = -1, []
        batch = self.start_iter
        while True:
            first = batch * self.total_batch_size + self.rank * self.batch_size
            keys = []
            for position in range(first, first + self.batch_size):
                if position // self.num_records != epoch:
                    epoch = position // self.num_records
                    order = self.permutation(epoch)
                keys.append((order[position % self.num_records], position))
            yield keys
            batch += 1


class SeededMapDataset(Dataset):
    """Applies `mapper` to record `index` with the global RNGs seeded from (seed, stream position):
    a sample's augmentation depends on its position only, not on which process or worker maps it
    nor on what that worker mapped before."""

    def __init__(self, records: Sequence[dict[str, Any]], mapper: Mapper, seed: int):
        # serialized into one buffer: workers do not grow memory by touching Python objects
        self.records = DatasetFromList(list(records), copy=False)
        self.mapper = mapper
        self.seed = seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, position = key
        record = self.records[index]
        with seeded_global_rngs(derive_seed(self.seed, SAMPLE_AUGMENTATION, position)):
            sample = self.mapper(record)
        if sample is None:  # Detectron2's MapDataset would silently substitute another record
            raise ValueError(
                f"the training mapper returned None for {record.get('file_name', record)}: "
                "filter such records out when registering the dataset"
            )
        return sample


def build_resumable_train_loader(
    dataset: Sequence[dict[str, Any]],
    mapper: Mapper,
    *,
    total_batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    start_iter: int = 0,
    shuffle: bool = True,
) -> DataLoader:
    """Infinite training loader yielding lists of mapped records (per-rank share of
    `total_batch_size`), positioned at batch `start_iter`. Use it in place of Detectron2's
    `build_detection_train_loader` (same arguments, minus the samplers) for any record list;
    `seed` and `start_iter` are filled in by `ovseg_d2.engine.do_train`."""
    sampler = StreamBatchSampler(
        len(dataset), total_batch_size, seed=seed, start_iter=start_iter, shuffle=shuffle
    )
    return DataLoader(
        SeededMapDataset(dataset, mapper, seed),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=trivial_batch_collator,
    )


def build_sem_seg_test_loader(
    dataset_name: str,
    *,
    min_size: int | None = None,
    max_size: int = 2560,
    mapper: Mapper | None = None,
    num_workers: int = 0,
):
    """Batch-1 inference loader of one registered dataset; the default mapper resizes the short
    side to `min_size` (no resize when None) and reads no ground truth."""
    mapper = mapper or SemSegDatasetMapper(
        is_train=False, augmentations=build_test_augmentations(min_size, max_size)
    )
    dataset = get_detection_dataset_dicts(dataset_name, filter_empty=False)
    return build_detection_test_loader(
        dataset=dataset, mapper=mapper, batch_size=1, num_workers=num_workers
    )


def build_sem_seg_train_loader(
    dataset_names: str | Sequence[str],
    *,
    total_batch_size: int,
    mapper: Mapper | None = None,
    num_workers: int = 0,
    seed: int = 0,
    start_iter: int = 0,
    **augmentation_kwargs: Any,
) -> DataLoader:
    """Infinite, resumable training loader (`build_resumable_train_loader`) of registered datasets.
    Without `mapper`, a `SemSegDatasetMapper` with `build_train_augmentations(**augmentation_kwargs)`
    is used; its crop ignores the first dataset's `ignore_label` unless given."""
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    if mapper is not None and augmentation_kwargs:
        raise TypeError(
            f"augmentation arguments {sorted(augmentation_kwargs)} are unused with a `mapper`"
        )
    if mapper is None:
        augmentation_kwargs.setdefault("ignore_label", MetadataCatalog.get(names[0]).ignore_label)
        mapper = SemSegDatasetMapper(
            is_train=True, augmentations=build_train_augmentations(**augmentation_kwargs)
        )
    dataset = get_detection_dataset_dicts(names, filter_empty=False)
    return build_resumable_train_loader(
        dataset, mapper, total_batch_size=total_batch_size, num_workers=num_workers,
        seed=seed, start_iter=start_iter,
    )
