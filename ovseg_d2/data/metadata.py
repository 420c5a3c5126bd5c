"""Small accessors of dataset metadata used by LazyConfig files (configs hold no logic)."""
from __future__ import annotations

from detectron2.data import MetadataCatalog


def prompt_classes(dataset_name: str) -> list[str]:
    """The text vocabulary a model should use for `dataset_name` (its `prompt_classes`, which
    defaults to `stuff_classes`); importing ovseg_d2.data first registers the datasets."""
    import ovseg_d2.data  # noqa: F401

    meta = MetadataCatalog.get(dataset_name)
    names = meta.get("prompt_classes", None) or meta.get("stuff_classes", None)
    if not names:
        raise KeyError(f"dataset '{dataset_name}' is not registered or has no class names")
    return list(names)
