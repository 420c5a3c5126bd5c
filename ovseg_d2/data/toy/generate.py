"""Write the toy world to disk in the layouts of the real data, resumably.

    <root>/world.json                                  generation config + vocabulary + split
    <root>/images/{train,val,retrieval}/<id>.jpg
    <root>/annotations_detectron2/<split>/<id>.png     class ids 0..29 (all classes), background 255
    <root>/meta/<split>.jsonl                          per image: caption, background, object records
    <root>/captions/{train,val}.jsonl                  {"filename", "caption"}  (OVSegmentor meta file)
    <root>/shards/train-<6 digits>.tar                 <key>.jpg + <key>.txt + <key>.json  (TCL / img2dataset)

Every image is rendered from its own generator seeded by (seed, split, index), so a file's bytes do
not depend on which other files exist: an interrupted run resumes where it stopped (existing images
are not rewritten) and produces the same world. Every file is written to a temporary name and renamed.
`meta/<split>.jsonl` is written after the split's images and marks the split complete.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from ...utils.atomic import write_bytes_atomic
from .scene import Scene, render_scene
from .world import CLASS_NAMES, CLASSES, SEEN_CLASS_IDS, UNSEEN_CLASS_IDS

SPLITS: tuple[str, ...] = ("train", "val", "retrieval")
CAPTION_SPLITS: tuple[str, ...] = ("train", "val")
_SPLIT_CODES = {split: i for i, split in enumerate(SPLITS)}
_JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ToyWorldConfig:
    """Sizes of the generated world. `num_retrieval` single-object images cycle through all classes."""

    num_train: int = 4000
    num_val: int = 300
    num_retrieval: int = 300
    image_size: int = 96
    seed: int = 0
    shard_size: int = 1000

    def num_images(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "retrieval": self.num_retrieval}[split]


class ToyWorldLayout:
    """Paths of a toy world rooted at `root` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / "world.json"

    def image_dir(self, split: str) -> Path:
        return self.root / "images" / split

    def label_dir(self, split: str) -> Path:
        return self.root / "annotations_detectron2" / split

    def meta_file(self, split: str) -> Path:
        return self.root / "meta" / f"{split}.jsonl"

    def captions_file(self, split: str) -> Path:
        return self.root / "captions" / f"{split}.jsonl"

    @property
    def shard_dir(self) -> Path:
        return self.root / "shards"

    def shards(self) -> list[Path]:
        return sorted(self.shard_dir.glob("train-*.tar"))


def image_key(index: int) -> str:
    return f"{index:06d}"


def render_toy_image(config: ToyWorldConfig, split: str, index: int) -> Scene:
    """The scene of image `index` of `split`: a pure function of the config's seed and size."""
    rng = np.random.default_rng([config.seed, _SPLIT_CODES[split], index])
    class_ids = [index % len(CLASSES)] if split == "retrieval" else None
    return render_scene(rng, config.image_size, class_ids)


def encode_jpeg(image: np.ndarray) -> bytes:
    """RGB uint8 -> JPEG bytes (quality 95, no chroma subsampling: colours are the signal)."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), _JPEG_PARAMS)
    assert ok
    return buf.tobytes()


def encode_png(label: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", label)
    assert ok
    return buf.tobytes()


def _jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _check_manifest(layout: ToyWorldLayout, config: ToyWorldConfig) -> None:
    """Create the manifest, or refuse to mix two different worlds in one folder."""
    manifest = {
        "format_version": FORMAT_VERSION,
        "config": asdict(config),
        "class_names": list(CLASS_NAMES),
        "unseen_class_ids": list(UNSEEN_CLASS_IDS),
        "seen_class_ids": list(SEEN_CLASS_IDS),
    }
    if layout.manifest.exists():
        existing = json.loads(layout.manifest.read_text())
        if existing != manifest:
            raise ValueError(
                f"{layout.root} holds a toy world generated with {existing.get('config')}; refusing to "
                f"mix it with {asdict(config)}. Use another output folder or delete the old one."
            )
        return
    write_bytes_atomic(layout.manifest, json.dumps(manifest, indent=2).encode())


def _write_split(layout: ToyWorldLayout, config: ToyWorldConfig, split: str, progress: bool) -> None:
    """Render and write the images of `split` that are missing, then its meta and caption files."""
    records = []
    for index in tqdm(range(config.num_images(split)), desc=f"toy world {split}", disable=not progress):
        key = image_key(index)
        image_path = layout.image_dir(split) / f"{key}.jpg"
        label_path = layout.label_dir(split) / f"{key}.png"
        scene = render_toy_image(config, split, index)
        # The image is written last: its presence means its label map exists too.
        if not image_path.exists():
            write_bytes_atomic(label_path, encode_png(scene.label))
            write_bytes_atomic(image_path, encode_jpeg(scene.image))
        records.append({
            "image_id": key,
            "file_name": str(image_path.relative_to(layout.root)),
            "sem_seg_file_name": str(label_path.relative_to(layout.root)),
            "caption": scene.caption,
            "background": scene.background,
            "objects": [o.to_record() for o in scene.objects],
        })
    if split in CAPTION_SPLITS:
        captions = ({"filename": r["file_name"], "caption": r["caption"]} for r in records)
        write_bytes_atomic(layout.captions_file(split), _jsonl(captions))
    write_bytes_atomic(layout.meta_file(split), _jsonl(records))


def read_meta(layout: ToyWorldLayout, split: str) -> list[dict[str, Any]]:
    """The per-image records of a generated split (see `_write_split`)."""
    with open(layout.meta_file(split)) as f:
        return [json.loads(line) for line in f]


def _chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _write_shards(layout: ToyWorldLayout, config: ToyWorldConfig) -> None:
    """img2dataset-style webdataset shards of the train captions; key = 6-digit shard + 4-digit index."""
    records = read_meta(layout, "train")
    for shard_id, chunk in enumerate(_chunks(records, config.shard_size)):
        path = layout.shard_dir / f"train-{shard_id:06d}.tar"
        if path.exists():
            continue
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for i, rec in enumerate(chunk):
                key = f"{shard_id:06d}{i:04d}"
                meta = {"key": key, "source": rec["file_name"], "objects": rec["objects"]}
                members = {
                    "jpg": (layout.root / rec["file_name"]).read_bytes(),
                    "txt": rec["caption"].encode(),
                    "json": json.dumps(meta).encode(),
                }
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    tar.addfile(info, io.BytesIO(data))
        write_bytes_atomic(path, buf.getvalue())


def generate_toy_world(
    root: str | os.PathLike, config: ToyWorldConfig = ToyWorldConfig(), *, progress: bool = True,
    splits: Sequence[str] = SPLITS,
) -> ToyWorldLayout:
    """Generate (or complete) the toy world under `root`; complete splits are skipped entirely.
    `splits` limits the work to some splits (the shards come with "train"): an image does not depend
    on the other splits, so e.g. the retrieval split alone equals that of the full world."""
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown toy world splits {sorted(unknown)}; choose from {SPLITS}")
    layout = ToyWorldLayout(root)
    _check_manifest(layout, config)
    for split in splits:
        if not layout.meta_file(split).exists():
            _write_split(layout, config, split, progress)
    if "train" in splits:
        _write_shards(layout, config)
    return layout
