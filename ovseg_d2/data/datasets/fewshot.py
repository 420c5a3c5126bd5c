"""Few-shot fold datasets (PASCAL-5i, COCO-20i): (image, class) pairs and seeded test episodes.

Layout (relative to $DETECTRON2_DATASETS; written by `datasets/prepare_fewshot_splits.py`):

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClassAug/<id>.png         raw masks: 0 bg, c+1 = class c, 255 void
    VOCdevkit/VOC2012/fewshot_splits/{trn,val}/fold{0..3}.txt
    COCO2014/{train2014,val2014}/<name>.jpg
    COCO2014/annotations/{train2014,val2014}/<name>.png     raw masks: 0 bg, c+1 = class c
    COCO2014/fewshot_splits/{trn,val}/fold{0..3}.txt

A list line is `<image path relative to the image root, no extension>__<class, 1-based>`, e.g.
`2007_000033__01` or `train2014/COCO_train2014_000000013279__1`. The PASCAL files are HSNet's
`data/splits/pascal/{trn,val}/fold*.txt` copied verbatim (file k lists the pairs whose class is in
fold k). The four files of a split are read together and the pairs filtered by class: a fold's
training set keeps its base classes, its validation set its novel classes. For PASCAL this equals
HSNet (train = trn files of the other folds, val = val/fold f, same order); for COCO it lets HSNet's
per-fold pickles (converted to text, duplicates allowed) serve both the interleaved folds (c % 4 ==
f: the FWB split, PFENet's `use_split_coco`, used by HSNet/SAZS) and PANet's contiguous blocks.

Test sets are episodes (`sample_episodes`): a query pair, its class, and `shot` support images of
that class, drawn the way HSNet (and SAZS, with shot 0) draw them, 1,000 per fold.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .common import DatasetNotPreparedError, datasets_root

NUM_FOLD_FILES = 4
NUM_TEST_EPISODES = 1000  # per fold, HSNet / SAZS
EPISODE_SAMPLINGS = ("sequential", "class_uniform")
_SPLIT_DIRS = {"train": "trn", "val": "val"}


@dataclass(frozen=True)
class FewShotLayout:
    """Folders of one few-shot benchmark, relative to $DETECTRON2_DATASETS (or absolute)."""

    image_root: str
    mask_root: str
    list_root: str
    image_ext: str = "jpg"
    mask_ext: str = "png"

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else datasets_root() / p


PASCAL5I_LAYOUT = FewShotLayout(
    image_root="VOCdevkit/VOC2012/JPEGImages",
    mask_root="VOCdevkit/VOC2012/SegmentationClassAug",
    list_root="VOCdevkit/VOC2012/fewshot_splits",
)
COCO20I_LAYOUT = FewShotLayout(
    image_root="COCO2014",
    mask_root="COCO2014/annotations",
    list_root="COCO2014/fewshot_splits",
)


def parse_pair(line: str) -> tuple[str, int]:
    """`"2007_000033__01"` -> `("2007_000033", 0)` (0-based class)."""
    image_id, sep, cls = line.rpartition("__")
    if not sep or not image_id or not cls.isdigit() or int(cls) < 1:
        raise ValueError(f"malformed few-shot pair {line!r}; expected '<image>__<class 1-based>'")
    return image_id, int(cls) - 1


def load_fewshot_records(
    dataset_name: str,
    layout: FewShotLayout,
    split: str,
    classes: Sequence[int],
    *,
    prepare_hint: str = "",
) -> list[dict[str, Any]]:
    """Records `{file_name, sem_seg_file_name, image_id, class_id}` for the pairs of `split`
    ("train" or "val") whose 0-based class is in `classes`, in list-file order, deduplicated.
    Only folders and list files are checked (a split holds up to ~100k pairs)."""
    hint = f" Prepare it with: {prepare_hint}" if prepare_hint else ""
    image_root, mask_root = layout.resolve(layout.image_root), layout.resolve(layout.mask_root)
    list_dir = layout.resolve(layout.list_root) / _SPLIT_DIRS[split]
    files = [list_dir / f"fold{k}.txt" for k in range(NUM_FOLD_FILES)]
    for path in (image_root, mask_root, *files):
        if not path.exists():
            raise DatasetNotPreparedError(
                f"Dataset '{dataset_name}': expected {path} does not exist "
                f"(datasets root: {datasets_root()}, set $DETECTRON2_DATASETS to change it).{hint}"
            )
    wanted = set(classes)
    pairs: dict[tuple[str, int], None] = {}
    for path in files:
        for line in path.read_text().split():
            pair = parse_pair(line)
            if pair[1] in wanted:
                pairs.setdefault(pair)
    if not pairs:
        raise DatasetNotPreparedError(
            f"Dataset '{dataset_name}': no pairs of classes {sorted(wanted)} in {list_dir}.{hint}"
        )
    return [
        {
            "file_name": str(image_root / f"{image_id}.{layout.image_ext}"),
            "sem_seg_file_name": str(mask_root / f"{image_id}.{layout.mask_ext}"),
            "image_id": f"{image_id}__{cls + 1}",
            "class_id": cls,
        }
        for image_id, cls in pairs
    ]


def sample_episodes(
    pairs: Sequence[dict[str, Any]],
    classes: Sequence[int],
    *,
    num_episodes: int = NUM_TEST_EPISODES,
    shot: int = 0,
    seed: int = 0,
    sampling: str = "sequential",
) -> list[dict[str, Any]]:
    """`num_episodes` test episodes from the (image, class) `pairs` of one fold.

    sampling "sequential" (HSNet's PASCAL-5i): episode i queries pair i mod N, in list order.
    sampling "class_uniform" (HSNet's COCO-20i): a class uniformly from `classes` (in that order),
    then a query uniformly from that class's pairs.
    Each of the `shot` supports is drawn uniformly from the images of the episode's class, a draw
    equal to the query being redrawn (supports may repeat each other, as in HSNet). All draws come
    from one `np.random.RandomState(seed)` in HSNet's order and call form (`choice(n, 1,
    replace=False)`), so seed 0 reproduces HSNet / SAZS episodes after their `fix_randseed(0)`.

    Returns the query records with `episode_id` (0..num_episodes-1) and `support` (list of
    `{file_name, sem_seg_file_name, image_id}`); `class_id` and the query's files are the pair's.
    """
    if sampling not in EPISODE_SAMPLINGS:
        raise ValueError(f"episode sampling must be one of {EPISODE_SAMPLINGS}, got {sampling!r}")
    if not pairs:
        raise ValueError("cannot sample episodes from an empty list of pairs")
    by_class: dict[int, list[dict[str, Any]]] = {}
    for pair in pairs:
        by_class.setdefault(pair["class_id"], []).append(pair)
    if sampling == "class_uniform":
        empty = [c for c in classes if c not in by_class]
        if empty:
            raise ValueError(f"classes {empty} have no pairs to draw episodes from")
    rng = np.random.RandomState(seed)

    def draw(items: Sequence[Any]) -> Any:
        return items[int(rng.choice(len(items), 1, replace=False)[0])]

    episodes = []
    for episode_id in range(num_episodes):
        if sampling == "sequential":
            query = pairs[episode_id % len(pairs)]
        else:
            query = draw(by_class[draw(list(classes))])
        episode = dict(query, episode_id=episode_id, support=[])
        candidates = by_class[query["class_id"]]
        if shot and all(c["file_name"] == query["file_name"] for c in candidates):
            raise ValueError(
                f"class {query['class_id']} has no image other than the query "
                f"{query['file_name']} to draw {shot} support(s) from"
            )
        while len(episode["support"]) < shot:
            support = draw(candidates)
            if support["file_name"] != query["file_name"]:
                episode["support"].append(
                    {k: support[k] for k in ("file_name", "sem_seg_file_name", "image_id")}
                )
        episodes.append(episode)
    return episodes


def load_fewshot_episodes(
    dataset_name: str,
    layout: FewShotLayout,
    classes: Sequence[int],
    *,
    num_episodes: int = NUM_TEST_EPISODES,
    shot: int = 0,
    seed: int = 0,
    sampling: str = "sequential",
    prepare_hint: str = "",
) -> list[dict[str, Any]]:
    """The val pairs of `classes` (`load_fewshot_records`) drawn into episodes
    (`sample_episodes`)."""
    pairs = load_fewshot_records(dataset_name, layout, "val", classes, prepare_hint=prepare_hint)
    try:
        return sample_episodes(
            pairs, classes, num_episodes=num_episodes, shot=shot, seed=seed, sampling=sampling
        )
    except ValueError as err:
        hint = f" Prepare it with: {prepare_hint}" if prepare_hint else ""
        raise DatasetNotPreparedError(f"Dataset '{dataset_name}': {err}.{hint}") from err
