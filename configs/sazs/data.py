# Few-shot fold data of SAZS (PASCAL-5i by default; the COCO-20i configs change the names): the common
# loaders with SAZS's mappers, training on the fold's base-class (image, class) pairs, testing on its
# 1000 episodes.
from detectron2.config import LazyCall as L

from ovseg_d2.data.mappers import FewShotDatasetMapper, SemSegDatasetMapper
from ovseg_d2.projects.sazs.data import build_sazs_train_augmentations

from ..common.data import dataloader

dataloader.train.dataset_names = "ovseg_pascal5i_fold0_train"
dataloader.train.total_batch_size = 6
dataloader.train.mapper = L(FewShotDatasetMapper)(
    is_train=True, augmentations=L(build_sazs_train_augmentations)(crop_size=512), image_format="RGB"
)
# The episode record keeps its class_id (the model's record_vocabulary reads it; the evaluator reads the
# mask); a plain mapper also serves the demo and the profiling tools, whose records have no class.
dataloader.test.mapper = L(SemSegDatasetMapper)(is_train=False, augmentations=[], image_format="RGB")
dataloader.test_datasets = ["ovseg_pascal5i_fold0_val"]
# The official count: predictions on void pixels stay in the union. fewshot_paper_oracle=True is the
# official ground-truth selection of eigen-segments (with model.eval_mode="paper_oracle"): NOT zero-shot.
dataloader.evaluator = dict(fewshot_void_in_union=True, fewshot_paper_oracle=False)
