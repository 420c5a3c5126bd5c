# Semantic-segmentation data loaders. `dataloader.test` is one template instantiated per name in
# `dataloader.test_datasets` (several benchmarks are evaluated one after another in one run).
from detectron2.config import LazyCall as L
from omegaconf import OmegaConf

from ovseg_d2.data.mappers import (
    SemSegDatasetMapper,
    build_sem_seg_test_loader,
    build_sem_seg_train_loader,
    build_test_augmentations,
    build_train_augmentations,
)

dataloader = OmegaConf.create()

dataloader.train = L(build_sem_seg_train_loader)(
    dataset_names="ovseg_coco_stuff171_train",
    total_batch_size=4,
    num_workers=4,
    mapper=L(SemSegDatasetMapper)(
        is_train=True,
        augmentations=L(build_train_augmentations)(
            min_size=384,
            max_size=1333,
            sample_style="choice",
            crop_size=(384, 384),
            single_category_max_area=1.0,
            ignore_label=255,
            photometric=True,
            flip=True,
        ),
    ),
)

dataloader.test = L(build_sem_seg_test_loader)(
    dataset_name=None,  # filled in per entry of test_datasets
    mapper=L(SemSegDatasetMapper)(
        is_train=False, augmentations=L(build_test_augmentations)(min_size=640, max_size=2560)
    ),
    num_workers=2,
)
dataloader.test_datasets = ["ovseg_coco_stuff171_val"]
# Evaluation options of the method (keywords of ovseg_d2.evaluation.build_evaluator):
# metric_convention None = each dataset's own, "mmseg" / "detectron2" = the method's reporting rule.
dataloader.evaluator = dict(metric_convention=None)
