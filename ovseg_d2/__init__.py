"""ovseg-d2: the shared core of the open-vocabulary segmentation methods.

Importing this package is cheap and registers nothing. `import ovseg_d2.data` registers the
benchmark and toy-world datasets with Detectron2's catalogs (tools/train_net.py and tools/demo.py
do so); method packages live under `ovseg_d2.projects.<method>` and register their
meta-architectures and converters when imported.
"""
__version__ = "0.1.0"
