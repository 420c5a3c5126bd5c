"""Text classifiers: a `Vocabulary` -> class embeddings, behind one interface.

- `CLIPTextClassifier`: the live CLIP text tower (CAT-Seg, TCL, SAZS, the baseline);
- `HFTextClassifier`: a HuggingFace text model (OVSegmentor's BERT) with an optional projector;
- `PrecomputedTextClassifier`: a table of class embeddings from a file (Cascade-CLIP's recipe),
  regenerated with our tower by `export_text_embeddings` / `tools/export_text_embeddings.py`.

Encoder-backed classifiers cache per (vocabulary, weights): the key holds the identity, `_version`
and storage of every parameter AND buffer of the modules they run, so optimizer steps,
`load_state_dict` and BatchNorm running-statistics updates all invalidate it. The cache is bypassed
while the result depends on more than that: gradients are needed for a trainable parameter, or a
module with train-mode behaviour (dropout with p > 0, batch norm) is in training mode.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ovseg_d2.clip.templates import get_templates
from ovseg_d2.clip.text import CLIPTextTower
from ovseg_d2.data.vocab import load_vocabulary

from .vocabulary import Vocabulary

SYNONYM_MODES = ("first", "mean")
TEMPLATE_REDUCTIONS = ("mean_then_normalize", "normalize_then_mean")


class TextClassifier(ABC):
    """`classifier(vocabulary)` -> `(N, E)` (or `(N, P, E)` per template) embeddings, one row per
    prompt of the vocabulary, on the device of the classifier's modules (a file: CPU; callers move
    the result with `.to(device)`). `encode_calls` counts actual encoder runs / file reads."""

    encode_calls: int = 0

    @abstractmethod
    def __call__(self, vocabulary: Vocabulary) -> torch.Tensor: ...

    def clear_cache(self) -> None:
        """Drop cached embeddings (a model entering training mode calls this)."""


def embed_vocabulary(
    encode: Callable[[list[str]], torch.Tensor],
    vocabulary: Vocabulary,
    templates: Sequence[str],
    *,
    synonyms: str = "first",
    template_reduce: str = "mean_then_normalize",
    normalize: bool = True,
    keep_templates: bool = False,
) -> torch.Tensor:
    """Class embeddings from (prompts x templates x synonyms) texts, encoded in one `encode` call.

    synonyms: "first" (CAT-Seg) uses the first synonym; "mean" averages all synonyms.
    template_reduce: how text embeddings (templates and synonyms) are averaged:
      "mean_then_normalize" (TCL, OVSegmentor): mean of raw embeddings, then L2-normalise;
      "normalize_then_mean" (CLIP zero-shot, Cascade-CLIP): normalise each, mean, normalise again.
    keep_templates: return (N, P, E) (synonyms reduced, each template normalised if `normalize`);
    (N, E) otherwise.
    """
    _check_recipe(synonyms, template_reduce, templates)
    names = [s[:1] if synonyms == "first" else s for s in vocabulary.synonyms]
    texts = [t.format(s) for n in names for t in templates for s in n]
    raw = encode(texts)
    per_text = F.normalize(raw, dim=-1) if template_reduce == "normalize_then_mean" else raw
    out, start = [], 0
    for n in names:
        count = len(templates) * len(n)
        block = per_text[start : start + count].reshape(len(templates), len(n), -1)
        start += count
        out.append(block.mean(dim=1) if keep_templates else block.mean(dim=(0, 1)))
    emb = torch.stack(out)
    return F.normalize(emb, dim=-1) if normalize else emb


def _check_recipe(synonyms: str, template_reduce: str, templates: Sequence[str]) -> None:
    if synonyms not in SYNONYM_MODES:
        raise ValueError(f"synonyms must be one of {SYNONYM_MODES}, got {synonyms!r}")
    if template_reduce not in TEMPLATE_REDUCTIONS:
        raise ValueError(f"template_reduce must be one of {TEMPLATE_REDUCTIONS}, got {template_reduce!r}")
    if not templates:
        raise ValueError("at least one template is needed")


def state_key(modules: Iterable[nn.Module]) -> tuple:
    """Identity, in-place version and storage of every parameter and buffer of `modules`."""
    return tuple((id(t), t._version, t.data_ptr()) for m in modules for t in (*m.parameters(), *m.buffers()))


def _train_mode_dependent(module: nn.Module) -> bool:
    return any(
        m.training and (isinstance(m, nn.modules.batchnorm._BatchNorm) or (isinstance(m, nn.Dropout) and m.p > 0))
        for m in module.modules()
    )


class PromptEncoderClassifier(TextClassifier):
    """Templates x synonyms prompts through a text encoder, with the recipe fixed at construction
    (see `embed_vocabulary`) and the per-instance cache described in the module docstring.

    templates: the name of a template set (`ovseg_d2.clip.get_templates`, as configs give it) or the
    templates themselves; `self.templates` holds the resolved tuple."""

    def __init__(
        self,
        modules: Sequence[nn.Module],
        templates: str | Sequence[str],
        *,
        synonyms: str = "first",
        template_reduce: str = "mean_then_normalize",
        normalize: bool = True,
        keep_templates: bool = False,
    ) -> None:
        templates = get_templates(templates) if isinstance(templates, str) else tuple(templates)
        _check_recipe(synonyms, template_reduce, templates)
        self.modules = tuple(modules)
        self.templates = templates
        self.recipe = dict(
            synonyms=synonyms, template_reduce=template_reduce, normalize=normalize, keep_templates=keep_templates
        )
        self._cache: dict[tuple, torch.Tensor] = {}
        self.encode_calls = 0

    @abstractmethod
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), E) raw text embeddings."""

    def clear_cache(self) -> None:
        self._cache.clear()

    def _embed(self, vocabulary: Vocabulary) -> torch.Tensor:
        self.encode_calls += 1
        return embed_vocabulary(self.encode, vocabulary, self.templates, **self.recipe)

    def __call__(self, vocabulary: Vocabulary) -> torch.Tensor:
        params = [p for m in self.modules for p in m.parameters()]
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        if needs_grad or any(_train_mode_dependent(m) for m in self.modules):
            return self._embed(vocabulary)
        weights = state_key(self.modules)
        key = (weights, vocabulary.entries, params[0].device, params[0].dtype)
        cached = self._cache.get(key)
        if cached is None:
            with torch.no_grad():
                cached = self._embed(vocabulary)
            self._cache = {k: v for k, v in self._cache.items() if k[0] == weights}
            self._cache[key] = cached
        return cached


class CLIPTextClassifier(PromptEncoderClassifier):
    """The live CLIP text tower (today's recipe of every CLIP-based method)."""

    def __init__(self, tower: CLIPTextTower, templates: str | Sequence[str], **recipe) -> None:
        super().__init__([tower], templates, **recipe)
        self.tower = tower

    def encode(self, texts: list[str]) -> torch.Tensor:
        return self.tower.encode(texts)


class HFTextClassifier(PromptEncoderClassifier):
    """A HuggingFace text model (e.g. `transformers.BertModel`): the last hidden state of the first
    token ([CLS]) of every prompt, then `projector` if given (OVSegmentor's text projector with
    BatchNorm), in chunks of `chunk_size` prompts.

    tokenizer: texts -> mapping with `input_ids` and `attention_mask` tensors, e.g.
    `functools.partial(AutoTokenizer.from_pretrained(path), padding=True, truncation=True,
    return_tensors="pt")` (OVSegmentor pads inference prompts to the longest one).
    """

    def __init__(
        self,
        text_model: nn.Module,
        tokenizer: Callable[[list[str]], Mapping[str, torch.Tensor]],
        templates: str | Sequence[str],
        *,
        projector: nn.Module | None = None,
        chunk_size: int = 256,
        **recipe,
    ) -> None:
        modules = [text_model] + ([projector] if projector is not None else [])
        super().__init__(modules, templates, **recipe)
        self.text_model = text_model
        self.tokenizer = tokenizer
        self.projector = projector
        self.chunk_size = chunk_size

    def encode(self, texts: list[str]) -> torch.Tensor:
        device = next(self.text_model.parameters()).device
        features = []
        for start in range(0, len(texts), self.chunk_size):
            batch = self.tokenizer(texts[start : start + self.chunk_size])
            out = self.text_model(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            )
            features.append(out.last_hidden_state[:, 0])
        x = torch.cat(features)
        return self.projector(x) if self.projector is not None else x


class PrecomputedTextClassifier(TextClassifier):
    """Class embeddings read from `path`, one row per class entry.

    `.pth`: a dict {"class_names": [...], "embeddings": (C, E) or (C, P, E)} as written by
    `export_text_embeddings` (loaded with weights_only=True). `.npy`: a bare (C, E) array (Cascade-CLIP's
    official float16 files); its `class_names` (a list of entries or a vocabulary name, in row order)
    must be given. A vocabulary selects rows by entry (a training vocabulary of seen classes takes
    a subset); an entry missing from the file is an error. Returned as float32 on the CPU.
    """

    def __init__(self, path: str | Path, class_names: str | Sequence[str] | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"text embedding file not found: {self.path}")
        given = load_vocabulary(class_names) if isinstance(class_names, str) else class_names
        if self.path.suffix == ".npy":
            if given is None:
                raise ValueError(f"{self.path}: a .npy file has no class names; pass class_names (row order)")
            table, names = torch.from_numpy(np.load(self.path, allow_pickle=False)), list(given)
        else:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(data, dict) or not {"class_names", "embeddings"} <= set(data):
                raise ValueError(f"{self.path}: expected a dict with 'class_names' and 'embeddings'")
            table, names = data["embeddings"], list(data["class_names"])
            if given is not None and list(given) != names:
                raise ValueError(f"{self.path}: its class_names differ from the class_names given")
        if table.dim() not in (2, 3) or table.shape[0] != len(names):
            raise ValueError(f"{self.path}: embeddings of shape {tuple(table.shape)} for {len(names)} class names")
        self.table = table.float()
        self.class_names = tuple(names)
        self._rows = {n: i for i, n in enumerate(names)}
        self.encode_calls = 0
        self._cache: dict[tuple[str, ...], torch.Tensor] = {}

    def __call__(self, vocabulary: Vocabulary) -> torch.Tensor:
        cached = self._cache.get(vocabulary.entries)
        if cached is None:
            missing = [e for e in vocabulary.entries if e not in self._rows]
            if missing:
                raise KeyError(
                    f"{self.path} has no embedding for {len(missing)} prompt(s) of {vocabulary.source}: "
                    f"{missing[:8]}; the file holds {len(self.class_names)} classes ({list(self.class_names[:5])}, ...). "
                    "Regenerate it for this vocabulary with tools/export_text_embeddings.py"
                )
            cached = self.table[[self._rows[e] for e in vocabulary.entries]]
            self.encode_calls += 1
            self._cache[vocabulary.entries] = cached
        return cached


def export_text_embeddings(classifier: TextClassifier, vocabulary: Vocabulary, path: str | Path) -> None:
    """Write `classifier(vocabulary)` for `PrecomputedTextClassifier` (float32, CPU)."""
    with torch.no_grad():
        embeddings = classifier(vocabulary).detach().float().cpu()
    torch.save({"class_names": list(vocabulary.entries), "embeddings": embeddings}, path)


__all__ = [
    "CLIPTextClassifier",
    "HFTextClassifier",
    "PrecomputedTextClassifier",
    "PromptEncoderClassifier",
    "TextClassifier",
    "embed_vocabulary",
    "export_text_embeddings",
    "state_key",
]
