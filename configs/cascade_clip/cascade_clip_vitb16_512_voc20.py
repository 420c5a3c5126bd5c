# Cascade-CLIP, inductive zero-shot on PASCAL VOC-20 (15 seen / 5 unseen): official
# configs/voc_20/vpt_seg_zero_vit-b_512x512_20k_12_10.py.
# Published (README, mean of runs): mIoU(S) 92.5 / mIoU(U) 83.0 / hIoU 87.5.
#   train:    python tools/train_net.py --config-file configs/cascade_clip/cascade_clip_vitb16_512_voc20.py --num-gpus 4 \
#                 model.clip_weights=/path/to/ViT-B-16.pt
#   evaluate: python tools/train_net.py --config-file configs/cascade_clip/cascade_clip_vitb16_512_voc20.py --eval-only \
#                 train.init_checkpoint=/path/to/converted.pth   (tools/convert_checkpoint.py --method cascade_clip)
from detectron2.config import LazyCall as L

from ovseg_d2.modeling import PrecomputedTextClassifier

from .common import TEXT_EMBEDDINGS_DIR, dataloader, model, optimizer, poly_schedule, train

dataloader.train.dataset_names = "ovseg_voc20_seen_train"  # unseen pixels -> ignore, seen ids -> 0..S-1
dataloader.train.total_batch_size = 16
dataloader.test_datasets = ["ovseg_voc20_val"]

model.num_prompt_tokens = 10
# Official fixed embeddings (voc12_single.npy, rows in dataset order); training selects the seen rows.
model.text_classifier = L(PrecomputedTextClassifier)(path=f"{TEXT_EMBEDDINGS_DIR}/voc12_single.npy", class_names="voc20")
model.seen_bias = 0.1  # inductive calibration: -0.1 on the seen classes' sigmoid scores

train.max_iter = 20000
lr_multiplier = poly_schedule(train.max_iter)
train.checkpointer = dict(period=2000, max_to_keep=3)
train.output_dir = "./output/cascade_clip/voc20"
