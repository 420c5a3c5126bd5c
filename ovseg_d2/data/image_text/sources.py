"""Where image-caption pairs come from: webdataset tar shards or a JSON-lines meta file.

Both yield the same record format: `{"caption", "image_id", ...}` plus the image as either
`image_bytes` (a shard member) or `file_name` (a file under the image root).

* webdataset shards (TCL / img2dataset): members `<key>.jpg|png|jpeg` + `<key>.txt|text`; an
  optional `<key>.json` is parsed into `meta`, `shard` names the tar. Shards are never indexed:
  they are read as streams (see `stream.py`), so nothing here grows with the number of samples.
* JSON lines (OVSegmentor's meta file): one `{"filename": path relative to the image root,
  "caption": str, ...}` object per line; every other key is passed through unchanged.
  `JsonLinesIndex` keeps one int64 byte offset per line (8 bytes a pair) and parses a line when
  it is read, which gives the random access a cross-image pairing hook needs.
"""
from __future__ import annotations

import io
import json
import os
from array import array
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from braceexpand import braceexpand
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image, UnidentifiedImageError

from ..datasets.common import DatasetNotPreparedError, datasets_root

IMAGE_EXTS: tuple[str, ...] = ("jpg", "png", "jpeg")  # TCL's preference order
TEXT_EXTS: tuple[str, ...] = ("txt", "text")
DATASET_TYPE = "image_text"

PathLike = str | os.PathLike


class CorruptSampleError(ValueError):
    """One web sample cannot be used (undecodable image, missing member). The stream skips it with a
    warning naming it; anything else (a malformed meta file, a bug) is raised."""


def resolve_dataset_path(path: PathLike) -> Path:
    """Absolute paths unchanged; relative ones resolved against $DETECTRON2_DATASETS."""
    path = Path(path)
    return path if path.is_absolute() else datasets_root() / path


def expand_shards(shards: PathLike | Sequence[PathLike]) -> list[str]:
    """Shard paths from a folder (every `*.tar` in it), a brace pattern
    (`cc-{000000..001175}.tar`) or a list of either. Missing shards are errors (TCL's loader skips
    them silently; a silently smaller dataset is worse than a clear failure)."""
    items = [shards] if isinstance(shards, (str, os.PathLike)) else list(shards)
    paths: list[Path] = []
    for item in items:
        path = resolve_dataset_path(item)
        paths += sorted(path.glob("*.tar")) if path.is_dir() else [Path(p) for p in braceexpand(str(path))]
    missing = [str(p) for p in paths if not p.is_file()]
    if not paths or missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise DatasetNotPreparedError(f"webdataset shards not found: {missing[:3] or shards}{more}")
    return [str(p) for p in paths]


def shard_sample_to_record(sample: dict[str, Any]) -> dict[str, Any]:
    """A webdataset sample (`{"__key__", "__url__", "<ext>": bytes}`) -> record. Raises
    CorruptSampleError naming the shard and key when the image or the caption is missing."""
    where = f"sample {sample.get('__key__')!r} of shard {sample.get('__url__')}"
    image_ext = next((e for e in IMAGE_EXTS if e in sample), None)
    text_ext = next((e for e in TEXT_EXTS if e in sample), None)
    if image_ext is None or text_ext is None:
        members = sorted(k for k in sample if not k.startswith("__"))
        raise CorruptSampleError(f"{where} has no {'image' if image_ext is None else 'caption'} (members: {members})")
    record = {
        "image_bytes": sample[image_ext],
        "caption": sample[text_ext].decode("utf-8").strip(),
        "image_id": sample["__key__"],
        "shard": sample["__url__"],
    }
    if "json" in sample:
        record["meta"] = json.loads(sample["json"])
    return record


class JsonLinesIndex:
    """Random access to the records of a JSON-lines meta file; `filename`s are relative to
    `image_root` (default: the meta file's folder). Blank lines are skipped."""

    def __init__(self, meta_file: PathLike, image_root: PathLike | None = None) -> None:
        self.meta_file = Path(meta_file)
        if not self.meta_file.is_file():
            raise DatasetNotPreparedError(f"image-text meta file {self.meta_file} does not exist")
        self.image_root = Path(image_root) if image_root is not None else self.meta_file.parent
        offsets, lines, pos = array("q"), array("q"), 0
        with open(self.meta_file, "rb") as f:
            for line_no, line in enumerate(f, start=1):
                if line.strip():
                    offsets.append(pos)
                    lines.append(line_no)
                pos += len(line)
        self._offsets = np.frombuffer(offsets, dtype=np.int64)
        self._line_numbers = np.frombuffer(lines, dtype=np.int64)
        self._file: io.BufferedReader | None = None
        self._file_pid = -1

    def __len__(self) -> int:
        return len(self._offsets)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open their own file handle
        return {**self.__dict__, "_file": None, "_file_pid": -1}

    def _read_line(self, offset: int) -> bytes:
        if self._file is None or self._file_pid != os.getpid():  # a forked worker must not share the offset
            self._file, self._file_pid = open(self.meta_file, "rb"), os.getpid()
        self._file.seek(offset)
        return self._file.readline()

    def __getitem__(self, index: int) -> dict[str, Any]:
        line_no = int(self._line_numbers[index])
        where = f"{self.meta_file}:{line_no}"
        try:
            item = json.loads(self._read_line(int(self._offsets[index])))
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not a JSON object ({e})") from None
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(item).__name__}")
        missing = [k for k in ("filename", "caption") if k not in item]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing} (expected {{'filename', 'caption', ...}})")
        filename, caption = item.pop("filename"), item.pop("caption")
        return {
            **item,  # extra fields (labels, entities, pair indices) pass through unchanged
            "file_name": str(self.image_root / filename),
            "caption": caption,
            "image_id": f"{self.meta_file.stem}/{line_no}",
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))


def load_jsonl_records(meta_file: PathLike, image_root: PathLike | None = None) -> list[dict[str, Any]]:
    """All records of a JSON-lines meta file as a list (Detectron2's map-style datasets; for
    millions of pairs stream them with `build_image_text_train_loader(meta_file=...)` instead)."""
    return list(JsonLinesIndex(meta_file, image_root))


def _streamed_only(name: str, source: Any) -> list[dict[str, Any]]:
    raise TypeError(
        f"{name!r} is a webdataset ({source}); it is streamed, not listed: build its loader with "
        f"ovseg_d2.data.image_text.build_image_text_train_loader(shards=MetadataCatalog.get({name!r}).source, ...)"
    )


def register_image_text_dataset(
    name: str, source: PathLike | Sequence[PathLike], *, image_root: PathLike | None = None, **metadata: Any
) -> None:
    """Register (or re-register) a caption dataset `name`. `source` is a `.jsonl`/`.json` meta file
    (DatasetCatalog returns its records; relative paths resolve against $DETECTRON2_DATASETS) or
    webdataset shards (MetadataCatalog only: `DatasetCatalog.get` raises, because listing 14M
    web pairs in Python is what streaming avoids)."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    src = [str(s) for s in source] if not isinstance(source, (str, os.PathLike)) else str(source)
    if isinstance(source, (str, os.PathLike)) and str(source).endswith((".jsonl", ".json")):
        root = resolve_dataset_path(image_root) if image_root is not None else None
        DatasetCatalog.register(name, lambda: load_jsonl_records(resolve_dataset_path(source), root))
    else:
        DatasetCatalog.register(name, lambda: _streamed_only(name, src))
    MetadataCatalog.get(name).set(dataset_type=DATASET_TYPE, source=src, **metadata)


def read_record_image(record: dict[str, Any]) -> Image.Image:
    """The RGB image of a record (`image_bytes` of a shard member, else the file `file_name`).
    Raises CorruptSampleError naming the sample when it cannot be read or decoded."""
    if "image_bytes" in record:
        where = f"sample {record.get('image_id')!r} of shard {record.get('shard')}"
    else:
        where = f"sample {record.get('image_id')!r} ({record.get('file_name')})"
    try:
        data = record["image_bytes"] if "image_bytes" in record else Path(record["file_name"]).read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")  # convert() decodes fully: truncated data raises here
    except UnidentifiedImageError:
        raise CorruptSampleError(f"{where}: not a decodable image") from None
    except (OSError, Image.DecompressionBombError) as e:  # PIL's decode errors are OSErrors
        raise CorruptSampleError(f"{where}: cannot read the image ({e})") from None
