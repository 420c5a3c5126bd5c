# SAZS ViT-L/16 @384 on COCO-20i fold 0 (interleaved folds, as HSNet/SAZS): lr 2e-4, poly per epoch, 20 epochs,
# batch 6, crop 512. Epoch = unique training images / 6 (10340 / 12397 / 12173 / 12302 iterations for folds 0-3).
# Class names: lang-seg's fewshot_coco.txt spellings ("aeroplane", "trafficlight", ...), the prompts SAZS used.
from detectron2.config import LazyCall as L

from ovseg_d2.data.vocab import load_vocabulary

from .sazs_vitl16_384_pascal5i import dataloader, lr_multiplier, model, optimizer, train

EPOCHS = 20
COCO_FOLDS = [f"ovseg_coco20i_fold{f}_val" for f in range(4)]
dataloader.train.dataset_names = "ovseg_coco20i_fold0_train"
dataloader.test_datasets = ["ovseg_coco20i_fold0_val"]
model.train_class_names = L(load_vocabulary)(name="langseg_fewshot_coco80")
model.vocabulary_overrides = {name: "langseg_fewshot_coco80" for name in COCO_FOLDS}
optimizer.lr = 2e-4
lr_multiplier.epochs = EPOCHS
train.max_iter = EPOCHS * 10340
train.eval_period = 10340
train.checkpointer = dict(period=10340, max_to_keep=3)
train.best_metric = dict(name="ovseg_coco20i_fold0_val/sem_seg/mIoU", mode="max")
train.output_dir = "./output/sazs/vitl16_384_coco20i_fold0"
