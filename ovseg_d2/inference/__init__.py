"""The test-time procedure shared by all methods: resize policy, sliding windows with an optional
global view, and resizing scores back to the input size."""

from .policy import InferencePolicy, run_inference
from .sliding_window import resize_to_original, sliding_window_inference, window_positions

__all__ = ["InferencePolicy", "resize_to_original", "run_inference", "sliding_window_inference", "window_positions"]
