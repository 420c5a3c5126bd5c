# Data loaders of the toy world (96x96 images, no resizing; ovseg_d2/data/toy): train on the 24 seen
# classes (unseen pixels ignored), evaluate on all 30 classes of `toy_val` (seen/unseen/hIoU).
from ..common.data import dataloader

dataloader.train.dataset_names = "toy_seen_train"
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 0
dataloader.train.mapper.augmentations.min_size = 96
dataloader.train.mapper.augmentations.max_size = 96
dataloader.train.mapper.augmentations.crop_size = (96, 96)
dataloader.train.mapper.augmentations.photometric = False
dataloader.test.mapper.augmentations.min_size = None
dataloader.test.num_workers = 0
dataloader.test_datasets = ["toy_val"]
