"""Prompt-encoder classifiers take a template set's name (as configs give it) or the templates."""

from __future__ import annotations

from typing import Any, Sequence

import pytest
import torch
from torch import nn

from ovseg_d2.clip import get_templates
from ovseg_d2.modeling import Vocabulary
from ovseg_d2.modeling.text_classifiers import PromptEncoderClassifier


class LengthEncoder(PromptEncoderClassifier):
    """Embeds a text as (its length, 1): enough to tell the templates apart (the module only keys
    the cache)."""

    def __init__(self, templates: str | Sequence[str], **recipe: Any) -> None:
        super().__init__([nn.Linear(1, 1)], templates, **recipe)

    def encode(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[float(len(t)), 1.0] for t in texts])


def test_a_set_name_is_resolved_to_its_templates():
    by_name = LengthEncoder("tcl_custom")
    by_value = LengthEncoder(list(get_templates("tcl_custom")))
    assert by_name.templates == by_value.templates == get_templates("tcl_custom")
    vocabulary = Vocabulary.from_entries(["cat", "traffic light"])
    torch.testing.assert_close(by_name(vocabulary), by_value(vocabulary))


def test_a_sequence_is_taken_as_the_templates():
    assert LengthEncoder(["{}", "a {}."]).templates == ("{}", "a {}.")


def test_unknown_set_name_is_an_error():
    with pytest.raises(KeyError, match="Unknown template set 'no-such-set'"):
        LengthEncoder("no-such-set")
