"""Entities of captions (OVSegmentor's data side, spec 9): extraction, masked questions and answers,
and the cross-image lists `class_label.json` / `sample_list.json`.

The entity vocabulary (`ovseg_d2/data/vocab/cc4m_entities.json`) holds OVSegmentor's 100 frequent
CC12M words, its synonym map and the 73 unique classes whose order fixes the class indices.
A caption word is an entity when its lower-cased form, or its singular (English plural rules, no
nltk/WordNet: a deliberate difference, see projects/ovsegmentor/README.md), maps through the
synonyms onto one of the classes.

- `EntityVocabulary.entities(caption)`: the caption's classes, unique, in caption order.
- `masked_question(...)`: the caption with every entity word replaced by the mask token, and the
  answer "<template prefix>" + " and ".join(entities) (e.g. "a bad photo of a dog and ball").
  `official_word_strip=True` reproduces the official word cleaning (Python `strip("'s")`: "bus" ->
  "bu", "sofa" -> "ofa", so such entities are never masked; apostrophes removed; spec 15.1-15.2).
- `EntityQuestionMapper`: wraps a record mapper and adds "question" / "answer".
- `build_cross_image_lists(meta_file, vocabulary)`: class_label (image basename -> class index as a
  string; the first entity of the caption) and sample_list (class index -> [[filename, caption],
  ...]), the official formats; `ClassListPairing` draws a cross image from them (the
  `pairing(record, index, rng)` hook of `build_image_text_train_loader`), adding "entity".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ovseg_d2.clip.templates import get_templates

from .sources import JsonLinesIndex, resolve_dataset_path

__all__ = [
    "ClassListPairing", "EntityQuestionMapper", "EntityVocabulary", "build_cross_image_lists", "masked_question",
    "write_cross_image_lists",
]

_VOCAB_DIR = Path(__file__).resolve().parents[1] / "vocab"
_IRREGULAR_PLURALS = {"men": "man", "women": "woman", "children": "child", "mice": "mouse", "people": "people"}
_PUNCTUATION = "\"'.,;:!?()[]{}"


def _clean(word: str) -> str:
    """A caption word without surrounding punctuation and possessive "'s"."""
    return word.strip(_PUNCTUATION + "\n").removesuffix("'s").strip(_PUNCTUATION)


def _singulars(word: str) -> list[str]:
    """Singular candidates of a lower-case word by English plural rules (the word itself first)."""
    out = [word, _IRREGULAR_PLURALS.get(word, word)]
    if word.endswith("ies"):
        out.append(word[:-3] + "y")
    if word.endswith("ves"):
        out += [word[:-3] + "f", word[:-3] + "fe"]
    if word.endswith("es"):
        out.append(word[:-2])
    if word.endswith("s"):
        out.append(word[:-1])
    return out


@dataclass(frozen=True)
class EntityVocabulary:
    """Entity classes (their order = class indices) and the synonyms mapping words onto them."""

    classes: tuple[str, ...]
    synonyms: tuple[tuple[str, str], ...]  # (lower-case word, class)

    @classmethod
    @lru_cache(maxsize=None)
    def load(cls, name: str = "cc4m_entities") -> "EntityVocabulary":
        """A bundled vocabulary (`ovseg_d2/data/vocab/<name>.json`) or a JSON file with "classes" and
        "synonyms" ({word: class})."""
        path = _VOCAB_DIR / f"{name}.json" if not name.endswith(".json") else Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"entity vocabulary {path} not found (bundled: cc4m_entities)")
        data = json.loads(path.read_text(encoding="utf-8"))
        unknown = sorted({c for c in data["synonyms"].values() if c not in data["classes"]})
        if unknown:
            raise ValueError(f"{path}: synonyms map onto unknown classes {unknown}")
        return cls(tuple(data["classes"]), tuple((w.lower(), c) for w, c in data["synonyms"].items()))

    @property
    def class_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def entity_of(self, word: str) -> str | None:
        """The class a (clean) word names, or None."""
        table = dict(self.synonyms)
        for candidate in _singulars(word.lower()):
            entity = table.get(candidate, candidate)
            if entity in self.class_index:
                return entity
        return None

    def entities(self, caption: str) -> list[str]:
        """The classes named in `caption`, unique, in order of first mention."""
        found = (self.entity_of(_clean(w)) for w in caption.split())
        return list(dict.fromkeys(e for e in found if e is not None))


def masked_question(
    caption: str, vocabulary: EntityVocabulary, rng: np.random.Generator, *, mask_token: str = "[MASK]",
    templates: Sequence[str] | None = None, official_word_strip: bool = False,
) -> tuple[str, str, list[str]]:
    """(question, answer, entities) of a caption; the answer's prefix is the text before "{}" of a
    random ImageNet template (official: one of the 80 CLIP templates)."""
    words, entities = [], []
    for raw in caption.split(" "):
        if official_word_strip:
            word = raw.strip("'s").strip(" ").strip("\n")
            entity = vocabulary.entity_of(word.replace(".", ""))
        else:
            word = raw
            entity = vocabulary.entity_of(_clean(raw))
        if entity is not None:
            entities.append(entity)
            # keep the punctuation around a masked word ("dog," -> "[MASK],")
            word = mask_token if official_word_strip else raw.replace(_clean(raw), mask_token, 1).replace("'s", "", 1)
        words.append(word)
    question = " ".join(words)
    question = question.replace("'", "").strip() if official_word_strip else question.strip()
    templates = templates or get_templates("imagenet80")
    prefix = templates[int(rng.integers(len(templates)))].split("{}")[0]
    return question, prefix + " and ".join(dict.fromkeys(entities)), list(dict.fromkeys(entities))


class EntityQuestionMapper:
    """`mapper(record)` plus "question" and "answer" (the masked-entity-completion texts).
    Randomness (the answer template) comes from NumPy's global generator, which the loaders seed per
    sample."""

    def __init__(
        self, mapper: Callable[[dict[str, Any]], dict[str, Any]], vocabulary: str = "cc4m_entities", *,
        mask_token: str = "[MASK]", official_word_strip: bool = False,
    ) -> None:
        self.mapper = mapper
        self.vocabulary = EntityVocabulary.load(vocabulary)
        self.mask_token = mask_token
        self.official_word_strip = official_word_strip

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        out = self.mapper(record)
        rng = np.random.default_rng(np.random.randint(2**31))
        out["question"], out["answer"], out["entities"] = masked_question(
            out["caption"], self.vocabulary, rng, mask_token=self.mask_token,
            official_word_strip=self.official_word_strip,
        )
        return out


def build_cross_image_lists(
    records: Iterable[dict[str, str]], vocabulary: EntityVocabulary
) -> tuple[dict[str, str], dict[str, list[list[str]]]]:
    """(class_label, sample_list) of meta-file lines {"filename", "caption"}: an image's label is the
    first entity of its caption (images without entity are left out)."""
    index = vocabulary.class_index
    class_label: dict[str, str] = {}
    sample_list: dict[str, list[list[str]]] = {}
    for record in records:
        entities = vocabulary.entities(record["caption"])
        if not entities:
            continue
        label = str(index[entities[0]])
        class_label[os.path.basename(record["filename"])] = label
        sample_list.setdefault(label, []).append([record["filename"], record["caption"]])
    return class_label, sample_list


def write_cross_image_lists(meta_file: str | Path, output_dir: str | Path, vocabulary: str = "cc4m_entities") -> dict[str, int]:
    """Write class_label.json and sample_list.json (one line each, as officially) for a JSON-lines
    meta file; returns counts."""
    vocab = EntityVocabulary.load(vocabulary)
    with open(meta_file, encoding="utf-8") as f:
        records = (json.loads(line) for line in f if line.strip())
        class_label, sample_list = build_cross_image_lists(records, vocab)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "class_label.json").write_text(json.dumps(class_label), encoding="utf-8")
    (output_dir / "sample_list.json").write_text(json.dumps(sample_list), encoding="utf-8")
    return {"images": len(class_label), "classes": len(sample_list)}


class ClassListPairing:
    """Cross-image pairing from class_label.json / sample_list.json (the official first-release
    loader): the anchor's class list gives a uniformly drawn partner (possibly the anchor itself);
    the pair record carries "entity" = the class name. Anchors without a label get a random partner
    of a random class (the official loader needs every image to have a label). Relative paths
    resolve against $DETECTRON2_DATASETS, as the meta file's."""

    def __init__(self, class_label_file: str | Path, sample_list_file: str | Path, vocabulary: str = "cc4m_entities") -> None:
        class_label_file, sample_list_file = resolve_dataset_path(class_label_file), resolve_dataset_path(sample_list_file)
        for path in (class_label_file, sample_list_file):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{path} not found: build it with tools/build_cross_image_lists.py")
        self.class_label = json.loads(Path(class_label_file).read_text(encoding="utf-8"))
        self.sample_list = json.loads(Path(sample_list_file).read_text(encoding="utf-8"))
        self.classes = EntityVocabulary.load(vocabulary).classes
        self._labels = sorted(self.sample_list)

    def __call__(self, record: dict[str, Any], index: JsonLinesIndex, rng: np.random.Generator) -> dict[str, Any]:
        label = self.class_label.get(os.path.basename(record["file_name"]))
        if label is None:
            label = self._labels[int(rng.integers(len(self._labels)))]
        candidates = self.sample_list[label]
        filename, caption = candidates[int(rng.integers(len(candidates)))]
        return {"file_name": str(index.image_root / filename), "caption": caption,
                "image_id": f"pair/{filename}", "entity": self.classes[int(label)]}
