# Cross-dataset: the COCO-Stuff-171 inductive model (T = 50) evaluated on PASCAL VOC-20 (official
# configs/cross_dataset/coco-to-voc.py). Every class counts as seen there, so the official -0.1 shift is uniform
# and changes no label: seen_bias 0 here. Report plain mIoU.
#   python tools/train_net.py --config-file configs/cascade_clip/cascade_clip_vitb16_512_coco171_to_voc20.py --eval-only \
#       train.init_checkpoint=./output/cascade_clip/coco171/model_final.pth
from detectron2.config import LazyCall as L

from ovseg_d2.modeling import PrecomputedTextClassifier

from .cascade_clip_vitb16_512_coco171 import TEXT_EMBEDDINGS_DIR, dataloader, lr_multiplier, model, optimizer, train

dataloader.test_datasets = ["ovseg_voc20_val"]
model.seen_bias = 0.0
model.test_text_classifiers = L("builtins.dict")(  # per test dataset name
    ovseg_voc20_val=L(PrecomputedTextClassifier)(path=f"{TEXT_EMBEDDINGS_DIR}/voc12_single.npy", class_names="voc20"),
)
train.output_dir = "./output/cascade_clip/coco171_to_voc20"
