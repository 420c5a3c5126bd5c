"""ovseg-d2: the shared core of the open-vocabulary segmentation methods.

Importing this package registers the benchmark datasets with Detectron2's catalogs.
Method packages live under `ovseg_d2.projects.<method>`.
"""
__version__ = "0.1.0"
