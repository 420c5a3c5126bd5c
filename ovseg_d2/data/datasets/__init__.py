"""Dataset registrations; importing this package registers every `ovseg_*` dataset (lazily)."""
from . import builtin  # noqa: F401  (registers at import, like detectron2.data.datasets.builtin)
from .builtin import register_fewshot_datasets, register_seen_dataset
from .common import (
    EVALUATOR_TYPE,
    FEWSHOT_EVALUATOR_TYPE,
    DatasetNotPreparedError,
    datasets_root,
    load_sem_seg_records,
    register_sem_seg_dataset,
)
from .fewshot import (
    COCO20I_LAYOUT,
    PASCAL5I_LAYOUT,
    FewShotLayout,
    load_fewshot_episodes,
    load_fewshot_records,
    sample_episodes,
)

__all__ = [
    "EVALUATOR_TYPE", "FEWSHOT_EVALUATOR_TYPE", "DatasetNotPreparedError", "datasets_root",
    "load_sem_seg_records", "register_sem_seg_dataset", "register_seen_dataset",
    "register_fewshot_datasets", "FewShotLayout", "PASCAL5I_LAYOUT", "COCO20I_LAYOUT",
    "load_fewshot_records", "load_fewshot_episodes", "sample_episodes",
]
