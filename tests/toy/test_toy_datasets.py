"""The toy world through Detectron2's catalogs: sem-seg layouts, the seen split, caption datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from detectron2.data import DatasetCatalog, MetadataCatalog

from ovseg_d2.data import SemSegDatasetMapper, read_sem_seg
from ovseg_d2.data.image_text import ImageTextMapper, ImageTextStream, load_jsonl_records, read_record_image
from ovseg_d2.data.toy import CLASS_NAMES, SEEN_CLASS_IDS, SEEN_CLASS_NAMES, UNSEEN_CLASS_IDS, ToyWorldConfig


def test_sem_seg_datasets_load(registered_toy_root: Path, toy_config: ToyWorldConfig) -> None:
    for name, n, classes in (
        ("toy_val", toy_config.num_val, CLASS_NAMES),
        ("toy_train_all", toy_config.num_train, CLASS_NAMES),
        ("toy_seen_train", toy_config.num_train, SEEN_CLASS_NAMES),
    ):
        records = DatasetCatalog.get(name)
        assert len(records) == n
        assert all(Path(r["file_name"]).is_file() and Path(r["sem_seg_file_name"]).is_file() for r in records)
        meta = MetadataCatalog.get(name)
        assert meta.stuff_classes == list(classes) and meta.ignore_label == 255
        assert meta.evaluator_type == "ovseg_sem_seg"
    assert MetadataCatalog.get("toy_val").unseen_classes == list(UNSEEN_CLASS_IDS)


def test_seen_train_ground_truth_has_no_unseen_labels(registered_toy_root: Path) -> None:
    mapper = SemSegDatasetMapper(is_train=True, augmentations=[])
    found_unseen = False
    for record in DatasetCatalog.get("toy_seen_train"):
        raw = read_sem_seg(record["sem_seg_file_name"])
        seen = mapper(record)["sem_seg"].numpy()
        assert set(np.unique(seen).tolist()) <= set(range(len(SEEN_CLASS_IDS))) | {255}
        unseen_pixels = np.isin(raw, UNSEEN_CLASS_IDS)
        found_unseen |= bool(unseen_pixels.any())
        assert (seen[unseen_pixels] == 255).all()
        for seen_id, full_id in enumerate(SEEN_CLASS_IDS):
            assert ((seen == seen_id) == (raw == full_id)).all()
    assert found_unseen  # the tiny world does exercise the remapping


def test_jsonl_and_shards_hold_the_same_pairs(
    registered_toy_root: Path, toy_config: ToyWorldConfig
) -> None:
    jsonl = DatasetCatalog.get("toy_captions_train")
    # shards are streamed, never listed; one in-order pass of the stream gives their records
    with pytest.raises(TypeError, match="streamed"):
        DatasetCatalog.get("toy_captions_train_wds")
    source = MetadataCatalog.get("toy_captions_train_wds").source
    shards = list(ImageTextStream(
        mapper=dict, shards=source, shuffle_buffer=0, resampled=False, seed=0, rank=0, world_size=1
    ))
    assert len(jsonl) == len(shards) == toy_config.num_train
    assert MetadataCatalog.get("toy_captions_train").dataset_type == "image_text"
    for a, b in zip(jsonl, shards):
        assert a["caption"] == b["caption"]
        assert np.array_equal(np.asarray(read_record_image(a)), np.asarray(read_record_image(b)))
    # the shards are also plain webdataset (TCL's reader)
    urls = [str(p) for p in sorted((registered_toy_root / "shards").glob("*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))
    assert [s["txt"] for s in samples] == [r["caption"] for r in jsonl]
    assert samples[0]["jpg"].shape == (toy_config.image_size, toy_config.image_size, 3)


def test_image_text_mapper(registered_toy_root: Path, toy_config: ToyWorldConfig) -> None:
    records = load_jsonl_records(registered_toy_root / "captions/val.jsonl", registered_toy_root)
    assert len(records) == toy_config.num_val
    for is_train in (True, False):
        out = ImageTextMapper(32, is_train=is_train, hflip=True)(records[0])
        assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 32, 32)
        assert out["caption"] == records[0]["caption"]
