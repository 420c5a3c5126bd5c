# Cascade-CLIP, inductive zero-shot on PASCAL Context-59 (49 seen / 10 unseen): official
# configs/context_59/vpt_seg_zero_vit-b_512x512_40k_12_10.py.
# Published (README, mean of runs): mIoU(S) 55.9 / mIoU(U) 47.2 / hIoU 51.2.
#   train:    python tools/train_net.py --config-file configs/cascade_clip/cascade_clip_vitb16_512_pc59.py --num-gpus 4 \
#                 model.clip_weights=/path/to/ViT-B-16.pt
#   evaluate: python tools/train_net.py --config-file configs/cascade_clip/cascade_clip_vitb16_512_pc59.py --eval-only \
#                 train.init_checkpoint=/path/to/converted.pth   (tools/convert_checkpoint.py --method cascade_clip)
from detectron2.config import LazyCall as L

from ovseg_d2.modeling import PrecomputedTextClassifier

from .common import TEXT_EMBEDDINGS_DIR, dataloader, model, optimizer, poly_schedule, train

dataloader.train.dataset_names = "ovseg_pc59_seen_train"  # unseen pixels -> ignore, seen ids -> 0..S-1
dataloader.train.total_batch_size = 16
dataloader.test_datasets = ["ovseg_pc59_val"]

model.num_prompt_tokens = 35
# Official fixed embeddings (context-59_multi.npy, rows in dataset order); training selects the seen rows.
model.text_classifier = L(PrecomputedTextClassifier)(path=f"{TEXT_EMBEDDINGS_DIR}/context-59_multi.npy", class_names="pc59")
model.seen_bias = 0.1  # inductive calibration: -0.1 on the seen classes' sigmoid scores

train.max_iter = 40000
lr_multiplier = poly_schedule(train.max_iter)
train.checkpointer = dict(period=4000, max_to_keep=3)
train.output_dir = "./output/cascade_clip/pc59"
