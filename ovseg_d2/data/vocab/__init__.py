"""Class vocabularies and class splits, stored as JSON data next to this module.

A vocabulary is a JSON list of class entries; an entry may hold synonyms separated by ", " (comma +
space), the first being the display name. `split_synonyms` is the one parser of that format (the
model-side `ovseg_d2.modeling.Vocabulary` and the registrations' display names both use it).
The lists are the ones the published numbers were obtained with (CAT-Seg's `datasets/*.json` where
it has one), because the text prompts are part of the benchmark. `splits.json` holds the zero-shot
unseen classes, the few-shot folds and the COCO-Stuff-171 -> COCO id mapping.
"""
from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

_DIR = Path(__file__).parent

VOCABULARIES: tuple[str, ...] = (
    "voc20", "voc21", "voc20b", "pc59", "pc60", "pc459", "ade150", "ade847",
    "coco_stuff171", "coco_object81", "cityscapes19",
    "langseg_fewshot_coco80",  # COCO-20i prompts of lang-seg / SAZS (label_files/fewshot_coco.txt spellings)
)
SYNONYM_SEPARATOR = ", "


@lru_cache(maxsize=None)
def _load_json(path: str) -> Any:
    """Bundled data files only (immutable while the process runs)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_vocabulary(name: str) -> list[str]:
    """Entries of a bundled vocabulary (one of `VOCABULARIES`) or of a JSON file path (a user's own
    list of strings, e.g. for the demo). Entries are returned unchanged (ADE-150's "bed " keeps its
    trailing space, as in CAT-Seg)."""
    if name in VOCABULARIES:
        return list(_load_json(str(_DIR / f"{name}.json")))
    path = Path(name)
    if not path.is_file():
        raise KeyError(f"Unknown vocabulary '{name}': not one of {VOCABULARIES} nor a JSON file")
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ValueError(f"Vocabulary {path} must be a JSON list of strings")
    return entries


def split_synonyms(entry: str) -> list[str]:
    """The synonyms of a class entry, split on ", " only ("dog,puppy" stays one name) and kept
    verbatim: prompts are built from them as they are ("bed " -> "a photo of bed s.", as officially)."""
    return entry.split(SYNONYM_SEPARATOR)


def display_names(entries: Sequence[str], unique: bool = False) -> list[str]:
    """First synonym of each entry ("building, edifice" -> "building"); a bare "," does not split.

    With `unique`, entries whose first synonym is shared keep their whole text (ADE-847 has three
    "bag" and eight more such pairs), so per-class metrics keyed by name cannot collide.
    """
    names = [split_synonyms(entry)[0] for entry in entries]
    if unique:
        counts = Counter(names)
        names = [n if counts[n] == 1 else e for n, e in zip(names, entries)]
    return names


def _splits() -> dict[str, Any]:
    return _load_json(str(_DIR / "splits.json"))


def unseen_classes(vocabulary: str) -> list[int]:
    """Unseen class indices of the inductive zero-shot split of `vocabulary` (voc20 15/5,
    pc59 49/10, coco_stuff171 156/15; ZegCLIP / Cascade-CLIP)."""
    table = _splits()["zero_shot"]
    if vocabulary not in table:
        raise KeyError(f"No zero-shot split for '{vocabulary}'; known: {sorted(table)}")
    return list(table[vocabulary])


def seen_classes(vocabulary: str) -> list[int]:
    """Complement of `unseen_classes` in index order."""
    unseen = set(unseen_classes(vocabulary))
    return [i for i in range(len(load_vocabulary(vocabulary))) if i not in unseen]


def fewshot_classes(benchmark: str) -> list[str]:
    """Class entries of a few-shot benchmark ("pascal5i": 20 VOC, "coco20i": 80 COCO things), whose
    0-based index is the 1-based mask value minus 1."""
    spec = _fewshot_spec(benchmark)
    return load_vocabulary(spec["vocabulary"])[: spec["num_classes"]]


def fewshot_novel_classes(benchmark: str, fold: int, convention: str | None = None) -> list[int]:
    """Held-out class indices of `fold`. PASCAL-5i: contiguous 5f..5f+4. COCO-20i: "interleaved"
    (default; c % 4 == f: the FWB split, PFENet's "SPLIT COCO", used by HSNet/SAZS) or "contiguous"
    (20f..20f+19, PANet's split); results under the two COCO conventions are not comparable."""
    spec = _fewshot_spec(benchmark)
    convention = convention or spec["default"]
    folds = spec["folds"]
    if convention not in folds:
        raise KeyError(f"'{benchmark}' has no '{convention}' folds; known: {sorted(folds)}")
    if not 0 <= fold < len(folds[convention]):
        raise IndexError(f"'{benchmark}' has folds 0..{len(folds[convention]) - 1}, not {fold}")
    return list(folds[convention][fold])


def fewshot_base_classes(benchmark: str, fold: int, convention: str | None = None) -> list[int]:
    """Training (base) classes of `fold`: all classes of the benchmark minus the novel ones."""
    novel = set(fewshot_novel_classes(benchmark, fold, convention))
    return [c for c in range(_fewshot_spec(benchmark)["num_classes"]) if c not in novel]


def fewshot_default_convention(benchmark: str) -> str:
    return _fewshot_spec(benchmark)["default"]


def _fewshot_spec(benchmark: str) -> dict[str, Any]:
    table = _splits()["few_shot"]
    if benchmark not in table:
        raise KeyError(f"Unknown few-shot benchmark '{benchmark}'; known: {sorted(table)}")
    return table[benchmark]


def coco_stuff171_ids() -> list[int]:
    """1-based COCO category id of each COCO-Stuff-171 class (stuffthingmaps pixel = id - 1)."""
    return list(_splits()["coco_stuff171_ids"])


__all__ = [
    "VOCABULARIES", "SYNONYM_SEPARATOR", "load_vocabulary", "split_synonyms", "display_names",
    "unseen_classes", "seen_classes", "fewshot_classes", "fewshot_novel_classes",
    "fewshot_base_classes", "fewshot_default_convention", "coco_stuff171_ids",
]
