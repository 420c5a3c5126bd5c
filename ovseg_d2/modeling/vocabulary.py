"""The vocabulary a model segments: one immutable value built from dataset metadata or user words.

A `Vocabulary` holds the text prompts (one class entry per output channel, ", "-separated synonyms
kept verbatim), the scored classes they fold into (`prompt_to_class`; VOC-20b folds 39 background
words into "background") and the background class index. Synonyms are parsed by
`ovseg_d2.data.vocab.split_synonyms` only.

Per-config name overrides change the prompts of a dataset, never its scored class names (metric keys
stay the dataset's), so a method can evaluate with its own spellings without new registrations:
a rename map `{"aeroplane": "airplane"}` (keys: a prompt's entry or its first synonym) or the name
of a vocabulary / a JSON file with one entry per prompt (e.g. mmseg's class tuples for TCL).
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

from detectron2.data import DatasetCatalog, MetadataCatalog

from ovseg_d2.data.metadata import prompt_classes
from ovseg_d2.data.vocab import SYNONYM_SEPARATOR, display_names, load_vocabulary, split_synonyms

# How a config renames one dataset's prompts: {old: new} or a vocabulary name / JSON file path.
VocabularyOverride = Union[Mapping[str, str], str]

USER_SYNONYM_SEPARATOR = "|"


def _preview(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


@dataclass(frozen=True)
class Vocabulary:
    """Prompts, scored classes and their folding; `source` names the origin in error messages.

    entries: one class entry per prompt (output channel), synonyms separated by ", ".
    class_names: the K scored classes (unique display names, the metric keys).
    prompt_to_class: for each prompt, the index of the scored class it folds into.
    background_class: index of the scored background class, if any.
    """

    entries: tuple[str, ...]
    class_names: tuple[str, ...]
    prompt_to_class: tuple[int, ...]
    background_class: int | None = None
    source: str = "vocabulary"

    def __post_init__(self) -> None:
        if not self.entries:
            raise ValueError(f"{self.source}: the vocabulary is empty (at least one class is needed)")
        blank = [e for e in self.entries if not all(s.strip() for s in split_synonyms(e))]
        if blank:
            raise ValueError(f"{self.source}: empty class or synonym name in {_preview(blank)}")
        for what, names in (("class entries", self.entries), ("scored class names", self.class_names)):
            repeated = sorted(n for n, c in Counter(names).items() if c > 1)
            if repeated:
                raise ValueError(f"{self.source}: duplicate {what}: {_preview(repeated)}")
        if len(self.prompt_to_class) != len(self.entries):
            raise ValueError(
                f"{self.source}: prompt_to_class has {len(self.prompt_to_class)} entries for "
                f"{len(self.entries)} prompts"
            )
        indices = list(self.prompt_to_class) + ([self.background_class] if self.background_class is not None else [])
        if any(not 0 <= i < len(self.class_names) for i in indices):
            raise ValueError(f"{self.source}: class index out of range [0, {len(self.class_names)}) in {indices}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_entries(cls, entries: Sequence[str], *, source: str = "vocabulary") -> "Vocabulary":
        """One scored class per entry; display names as the registrations make them (unique)."""
        entries = tuple(str(e) for e in entries)
        return cls(entries, tuple(display_names(entries, unique=True)), tuple(range(len(entries))), source=source)

    @classmethod
    def from_text(cls, text: str) -> "Vocabulary":
        """User words: classes separated by ",", synonyms of one class by "|", spaces around names
        stripped ("cat, dog|puppy" -> entries "cat", "dog, puppy"). A name given twice, in one class
        or in two ("cat|kitty, cat"), is an error: the classes would be indistinguishable."""
        source = f"vocabulary {text!r}"
        if not text.strip():
            raise ValueError(f'{source}: the vocabulary is empty (give classes like "cat, dog|puppy")')
        classes = [[s.strip() for s in raw.split(USER_SYNONYM_SEPARATOR)] for raw in text.split(",")]
        empty = [USER_SYNONYM_SEPARATOR.join(c) for c in classes if not all(c)]
        if empty:
            raise ValueError(f"{source}: empty class or synonym name in {_preview(empty)}")
        repeated = sorted(n for n, c in Counter(s for syn in classes for s in syn).items() if c > 1)
        if repeated:
            raise ValueError(f"{source}: duplicate class names after synonym parsing: {_preview(repeated)}")
        return cls.from_entries([SYNONYM_SEPARATOR.join(c) for c in classes], source=source)

    @classmethod
    def from_metadata(cls, dataset_name: str, override: VocabularyOverride | None = None) -> "Vocabulary":
        """The prompts, scored classes, folding and background of a registered dataset (metadata keys
        `prompt_classes`, `stuff_classes`, `prompt_to_class`, `background_class`), with an optional
        name override applied to the prompts."""
        if dataset_name not in DatasetCatalog.list():
            close = difflib.get_close_matches(dataset_name, DatasetCatalog.list(), n=3)
            raise KeyError(
                f"dataset {dataset_name!r} is not registered" + (f"; did you mean {close}?" if close else "")
            )
        meta = MetadataCatalog.get(dataset_name)
        entries = prompt_classes(dataset_name)
        class_names = list(meta.stuff_classes)
        background = meta.get("background_class", None)
        folding = meta.get("prompt_to_class", None)
        if folding is None and len(entries) > len(class_names) and background is not None:
            folding = list(range(len(class_names))) + [background] * (len(entries) - len(class_names))
        if folding is None and len(entries) != len(class_names):
            raise ValueError(
                f"dataset {dataset_name!r}: {len(entries)} prompt_classes for {len(class_names)} stuff_classes "
                "and no prompt_to_class to fold them"
            )
        vocabulary = cls(
            tuple(entries),
            tuple(class_names),
            tuple(folding if folding is not None else range(len(entries))),
            background,
            source=f"dataset {dataset_name!r}",
        )
        return vocabulary if override is None else vocabulary.overridden(override)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        """Number of prompts (output channels)."""
        return len(self.entries)

    @property
    def synonyms(self) -> tuple[tuple[str, ...], ...]:
        """The synonyms of every prompt, verbatim."""
        return tuple(tuple(split_synonyms(e)) for e in self.entries)

    @property
    def prompt_names(self) -> tuple[str, ...]:
        """First synonym of every prompt (the name a demo draws for a channel)."""
        return tuple(s[0] for s in self.synonyms)

    # ------------------------------------------------------------------ overrides
    def overridden(self, override: VocabularyOverride) -> "Vocabulary":
        """This vocabulary with other prompts: a rename map or a full list (a bundled vocabulary
        name or a JSON file, one entry per prompt). Scored classes and folding are unchanged."""
        if isinstance(override, str):
            entries = load_vocabulary(override)
            if len(entries) != len(self.entries):
                raise ValueError(
                    f"{self.source}: override {override!r} has {len(entries)} entries, the vocabulary has "
                    f"{len(self.entries)} prompts"
                )
            return self._with_entries(entries, f"{self.source} with prompts from {override!r}")
        entries = list(self.entries)
        for old, new in override.items():
            matches = [i for i, e in enumerate(self.entries) if old in (e, split_synonyms(e)[0])]
            if not matches:
                close = difflib.get_close_matches(old, self.prompt_names, n=3)
                raise KeyError(
                    f"{self.source}: cannot rename {old!r}: no such prompt"
                    + (f"; did you mean {close}?" if close else "")
                )
            if len(matches) > 1:
                raise KeyError(
                    f"{self.source}: {old!r} names {len(matches)} prompts ({_preview([self.entries[i] for i in matches])}); "
                    "rename by the full entry"
                )
            entries[matches[0]] = new
        return self._with_entries(entries, f"{self.source} renamed")

    def _with_entries(self, entries: Sequence[str], source: str) -> "Vocabulary":
        return Vocabulary(tuple(entries), self.class_names, self.prompt_to_class, self.background_class, source)


def check_overrides(overrides: Mapping[str, VocabularyOverride]) -> None:
    """Apply every override once (at model construction), so an unknown dataset, a rename of a
    missing name or a list of the wrong length fails before any training or evaluation."""
    for dataset_name, override in overrides.items():
        Vocabulary.from_metadata(dataset_name, override)


__all__ = ["USER_SYNONYM_SEPARATOR", "Vocabulary", "VocabularyOverride", "check_overrides"]
