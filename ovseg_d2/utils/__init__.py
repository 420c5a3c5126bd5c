"""Visualization and small shared helpers."""

from .visualization import class_colors, draw_sem_seg_overlay, save_side_by_side

__all__ = ["class_colors", "draw_sem_seg_overlay", "save_side_by_side"]
