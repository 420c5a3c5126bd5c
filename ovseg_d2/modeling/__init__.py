"""Meta-architectures shared by the project (method-specific ones live in projects/<method>), the
vocabulary value and the text classifiers."""
from .base import OpenVocabSegmentor
from .baseline import DenseCLIPBaseline
from .text_classifiers import (
    CLIPTextClassifier,
    HFTextClassifier,
    PrecomputedTextClassifier,
    TextClassifier,
    export_text_embeddings,
)
from .vocabulary import Vocabulary, VocabularyOverride

__all__ = [
    "CLIPTextClassifier",
    "DenseCLIPBaseline",
    "HFTextClassifier",
    "OpenVocabSegmentor",
    "PrecomputedTextClassifier",
    "TextClassifier",
    "Vocabulary",
    "VocabularyOverride",
    "export_text_embeddings",
]
