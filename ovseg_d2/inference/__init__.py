"""Sliding-window / global-view inference and resizing scores back to the input size."""

from .sliding_window import resize_to_original, sliding_window_inference, window_positions

__all__ = ["resize_to_original", "sliding_window_inference", "window_positions"]
