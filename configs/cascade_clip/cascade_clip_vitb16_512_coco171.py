# Cascade-CLIP, inductive zero-shot on COCO-Stuff-171 (156 seen / 15 unseen): official
# configs/coco_171/vpt_seg_zero_vit-b_512x512_80k_12_100_multi.py.
# Published (README, mean of runs): mIoU(S) 41.2 / mIoU(U) 43.4 / hIoU 42.3.
#   train:    python tools/train_net.py --config-file configs/cascade_clip/cascade_clip_vitb16_512_coco171.py --num-gpus 4 \
#                 model.clip_weights=/path/to/ViT-B-16.pt
#   evaluate: python tools/train_net.py --config-file configs/cascade_clip/cascade_clip_vitb16_512_coco171.py --eval-only \
#                 train.init_checkpoint=/path/to/converted.pth   (tools/convert_checkpoint.py --method cascade_clip)
from detectron2.config import LazyCall as L

from ovseg_d2.modeling import PrecomputedTextClassifier

from .common import TEXT_EMBEDDINGS_DIR, dataloader, model, optimizer, poly_schedule, train

dataloader.train.dataset_names = "ovseg_coco_stuff171_seen_train"  # unseen pixels -> ignore, seen ids -> 0..S-1
dataloader.train.total_batch_size = 16
dataloader.test_datasets = ["ovseg_coco_stuff171_val"]

model.num_prompt_tokens = 50
# Official fixed embeddings (coco_multi.npy, rows in dataset order); training selects the seen rows.
model.text_classifier = L(PrecomputedTextClassifier)(path=f"{TEXT_EMBEDDINGS_DIR}/coco_multi.npy", class_names="coco_stuff171")
model.seen_bias = 0.1  # inductive calibration: -0.1 on the seen classes' sigmoid scores

train.max_iter = 80000
lr_multiplier = poly_schedule(train.max_iter)
train.checkpointer = dict(period=8000, max_to_keep=3)
train.output_dir = "./output/cascade_clip/coco171"
