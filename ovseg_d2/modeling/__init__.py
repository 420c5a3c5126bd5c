"""Meta-architectures shared by the project (method-specific ones live in projects/<method>)."""
from .base import OpenVocabSegmentor
from .baseline import DenseCLIPBaseline

__all__ = ["DenseCLIPBaseline", "OpenVocabSegmentor"]
