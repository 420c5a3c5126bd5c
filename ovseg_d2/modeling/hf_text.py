"""HuggingFace text towers and tokenizers, offline (OVSegmentor's BERT / RoBERTa).

Models are built from a config (random weights; real weights come with the method's converted
checkpoint) or read from a local folder; tokenizers only from local files. Nothing here touches the
network: a missing folder or vocabulary is an error naming the file and where to get it.
`HFTextClassifier` (text_classifiers.py) turns such a model into class embeddings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

__all__ = ["TextTokenizer", "build_hf_text_model", "load_hf_tokenizer"]

# How to obtain the files, per model family (named in errors).
_DOWNLOAD_HINT = (
    "download the tokenizer files (vocab.txt + tokenizer_config.json for BERT / DistilBERT, vocab.json + "
    "merges.txt for RoBERTa) of e.g. 'distilbert-base-uncased' or 'roberta-base' from huggingface.co into that "
    "folder (huggingface-cli download <name> --local-dir <folder>)"
)


def build_hf_text_model(spec: str | Mapping[str, Any], **model_kwargs: Any) -> nn.Module:
    """A HuggingFace text model (no task head; `model_kwargs` go to the model class, e.g.
    `add_pooling_layer=False`) from `spec`:
    a mapping = config values with `model_type` ("bert", "roberta", ...), built with random weights
    (`BertConfig()` defaults are bert-base-uncased); a string = a local folder holding config.json
    (and weights, read with `from_pretrained(local_files_only=True)`)."""
    from transformers import AutoConfig, AutoModel

    if isinstance(spec, (str, Path)):
        folder = Path(spec)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"no HuggingFace model folder at {folder} (config.json missing): download it with "
                "huggingface-cli download <name> --local-dir <folder>, or give the config as a dict"
            )
        return AutoModel.from_pretrained(str(folder), local_files_only=True, **model_kwargs)
    values = dict(spec)
    model_type = values.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"text model config needs 'model_type' (e.g. 'bert'), got keys {sorted(values)}")
    attn = values.pop("attn_implementation", None)
    config = AutoConfig.for_model(model_type, **values)
    if attn is not None:
        model_kwargs["attn_implementation"] = attn
    return AutoModel.from_config(config, **model_kwargs)


class TextTokenizer:
    """Texts -> {"input_ids", "attention_mask"} (B, L) long tensors with a local HF tokenizer.

    `max_length=None` pads to the longest text (OVSegmentor's inference prompts); an int pads and
    truncates to it (training texts: 77). token_type_ids are not returned (BERT defaults them to 0).
    """

    def __init__(self, folder: str | Path, max_length: int | None = None) -> None:
        self.folder = Path(folder)
        self.tokenizer = load_hf_tokenizer(self.folder)
        self.max_length = max_length

    @property
    def mask_token_id(self) -> int:
        return self.tokenizer.mask_token_id

    def __call__(self, texts: list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        length = max_length or self.max_length
        padding = "max_length" if length is not None else True
        out = self.tokenizer(
            list(texts), padding=padding, truncation=True, max_length=length, return_tensors="pt",
            return_token_type_ids=False,
        )
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}


def load_hf_tokenizer(folder: str | Path) -> Callable:
    """`AutoTokenizer.from_pretrained(folder)` from local files only, with an error naming the folder."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"tokenizer folder not found: {folder}; {_DOWNLOAD_HINT}")
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        present = sorted(p.name for p in folder.iterdir())
        raise FileNotFoundError(f"cannot load a tokenizer from {folder} (files: {present}): {err}; {_DOWNLOAD_HINT}") from err
