"""Image-caption datasets for contrastive pretraining (toy CLIP, TCL, OVSegmentor).

Two on-disk formats, one record format `{"file_name", "caption", "image_id"}`:

* JSON lines (OVSegmentor's meta file): one `{"filename": path relative to the image root,
  "caption": str}` object per line (extra keys ignored).
* webdataset tar shards (TCL / img2dataset): members `<key>.jpg|png|jpeg` + `<key>.txt|text`
  (other members such as `<key>.json` ignored). A shard record points into the tar:
  `file_name` is the shard, `tar_offset` / `tar_size` locate the image bytes, so shards are
  read map-style by Detectron2's samplers (random access, exact epochs, per-rank splits) instead of
  as a stream. Only the tar headers are scanned at load time.

`ImageTextMapper` turns a record into `{"image": uint8 CHW tensor, "caption": str, ...}`.
"""
from __future__ import annotations

import copy
import json
import math
import os
import tarfile
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from braceexpand import braceexpand
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T

from .datasets.common import DatasetNotPreparedError, datasets_root

IMAGE_EXTS: tuple[str, ...] = ("jpg", "png", "jpeg")  # TCL's preference order
TEXT_EXTS: tuple[str, ...] = ("txt", "text")
DATASET_TYPE = "image_text"

PathLike = str | os.PathLike


def _resolve(path: PathLike) -> Path:
    path = Path(path)
    return path if path.is_absolute() else datasets_root() / path


def load_jsonl_records(meta_file: PathLike, image_root: PathLike | None = None) -> list[dict[str, Any]]:
    """Records of a JSON-lines meta file; `filename`s are relative to `image_root` (default: the
    meta file's folder)."""
    meta_file = Path(meta_file)
    if not meta_file.is_file():
        raise DatasetNotPreparedError(f"image-text meta file {meta_file} does not exist")
    root = Path(image_root) if image_root is not None else meta_file.parent
    records = []
    with open(meta_file) as f:
        for line_no, line in enumerate(f):
            if not line.strip():
                continue
            item = json.loads(line)
            records.append({
                "file_name": str(root / item["filename"]),
                "caption": item["caption"],
                "image_id": f"{meta_file.stem}/{line_no}",
            })
    return records


def expand_shards(shards: PathLike | Sequence[PathLike]) -> list[Path]:
    """Shard paths from a folder (every `*.tar` in it), a brace pattern
    (`cc-{000000..000347}.tar`) or a list of paths. Missing shards are errors."""
    if isinstance(shards, (str, os.PathLike)):
        path = _resolve(shards)
        paths = sorted(path.glob("*.tar")) if path.is_dir() else [Path(p) for p in braceexpand(str(path))]
    else:
        paths = [_resolve(p) for p in shards]
    missing = [p for p in paths if not p.is_file()]
    if not paths or missing:
        raise DatasetNotPreparedError(f"webdataset shards not found: {missing[:3] or shards}")
    return paths


def load_shard_records(shard: PathLike) -> list[dict[str, Any]]:
    """One record per sample of a tar shard that has both an image and a caption."""
    samples: dict[str, dict[str, Any]] = {}
    with tarfile.open(shard) as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = os.path.basename(member.name)
            key, _, ext = base.partition(".")
            key = os.path.join(os.path.dirname(member.name), key)
            if ext in IMAGE_EXTS:
                sample = samples.setdefault(key, {})
                if IMAGE_EXTS.index(ext) < sample.get("_rank", len(IMAGE_EXTS)):
                    sample.update(_rank=IMAGE_EXTS.index(ext), tar_offset=member.offset_data, tar_size=member.size)
            elif ext in TEXT_EXTS:
                samples.setdefault(key, {})["caption"] = tar.extractfile(member).read().decode("utf-8").strip()
    return [
        {"file_name": str(shard), "tar_offset": s["tar_offset"], "tar_size": s["tar_size"],
         "caption": s["caption"], "image_id": key}
        for key, s in samples.items()
        if "tar_offset" in s and "caption" in s
    ]


def load_image_text_records(
    source: PathLike | Sequence[PathLike], image_root: PathLike | None = None
) -> list[dict[str, Any]]:
    """Records of a `.jsonl`/`.json` meta file, or of webdataset shards (see `expand_shards`).
    Relative paths are resolved against $DETECTRON2_DATASETS."""
    if isinstance(source, (str, os.PathLike)) and str(source).endswith((".jsonl", ".json")):
        return load_jsonl_records(_resolve(source), _resolve(image_root) if image_root is not None else None)
    return [r for shard in expand_shards(source) for r in load_shard_records(shard)]


def register_image_text_dataset(
    name: str, source: PathLike | Sequence[PathLike], *, image_root: PathLike | None = None, **metadata: Any
) -> None:
    """Register (or re-register) a caption dataset `name` lazily; see `load_image_text_records`."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_image_text_records(source, image_root))
    src = [str(s) for s in source] if not isinstance(source, (str, os.PathLike)) else str(source)
    MetadataCatalog.get(name).set(dataset_type=DATASET_TYPE, source=src, **metadata)


def read_record_image(record: dict[str, Any]) -> np.ndarray:
    """RGB uint8 (H, W, 3) image of a record (plain file, or bytes inside a tar shard)."""
    if "tar_offset" in record:
        with open(record["file_name"], "rb") as f:
            f.seek(record["tar_offset"])
            data = f.read(record["tar_size"])
    else:
        data = Path(record["file_name"]).read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode the image of record {record.get('image_id')} ({record['file_name']})")
    return np.ascontiguousarray(image[..., ::-1])


class RandomResizedCrop(T.Augmentation):
    """torchvision's RandomResizedCrop as a Detectron2 augmentation (crop only; resize separately):
    a crop of `scale` x the image area and aspect ratio in `ratio` (log-uniform), else the largest
    centred crop of a valid aspect ratio."""

    def __init__(self, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        for _ in range(10):
            area = h * w * np.random.uniform(*self.scale)
            aspect = math.exp(np.random.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                return T.CropTransform(np.random.randint(w - cw + 1), np.random.randint(h - ch + 1), cw, ch)
        aspect = min(max(w / h, self.ratio[0]), self.ratio[1])
        cw, ch = (w, int(round(w / aspect))) if w / h < aspect else (int(round(h * aspect)), h)
        cw, ch = min(cw, w), min(ch, h)
        return T.CropTransform((w - cw) // 2, (h - ch) // 2, cw, ch)


class CenterSquareCrop(T.Augmentation):
    """Crop the largest centred square (CLIP's test-time crop after a shortest-edge resize)."""

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        s = min(h, w)
        return T.CropTransform((w - s) // 2, (h - s) // 2, s, s)


class ImageTextMapper:
    """Record -> `{"image": uint8 CHW tensor (image_size x image_size), "caption", "image_id"}`.

    Training: random resized crop (`scale` of the area) -> resize -> optional horizontal flip.
    Flip defaults to off because captions may state left/right relations (the toy world's do).
    Test: resize the short side, centre square crop.
    """

    def __init__(
        self,
        image_size: int,
        is_train: bool = True,
        *,
        scale: tuple[float, float] = (0.5, 1.0),
        hflip: bool = False,
    ) -> None:
        if is_train:
            augs: list[T.Augmentation] = [RandomResizedCrop(scale), T.Resize((image_size, image_size))]
            if hflip:
                augs.append(T.RandomFlip(horizontal=True))
        else:
            augs = [T.ResizeShortestEdge(image_size, max_size=10**6), CenterSquareCrop()]
        self.augmentations = T.AugmentationList(augs)

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        out = copy.copy(record)
        aug_input = T.AugInput(read_record_image(record))
        self.augmentations(aug_input)
        out["image"] = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        return out
