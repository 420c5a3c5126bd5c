"""Visualization and small shared helpers."""

from .visualization import class_colors, draw_legend, draw_sem_seg_overlay, render_segmentation, save_image

__all__ = ["class_colors", "draw_legend", "draw_sem_seg_overlay", "render_segmentation", "save_image"]
