# Cascade-CLIP, transductive zero-shot on COCO-Stuff-171 (156 seen / 15 unseen): official
# configs/coco_171/vpt_seg_zero_vit-b_512x512_40k_12_100_multi_st.py.
# Self-training restarts from the inductive run at half its schedule (load_from: fresh optimizer and
# warmup) and trains 40000 more iterations on all classes: pixels annotated with an unseen class get
# the online pseudo-label argmax over the unseen classes of the same forward; no test-time bias.
# Published: mIoU(S) 41.7 / mIoU(U) 62.5 / hIoU 50.0.
#   python tools/train_net.py --config-file configs/cascade_clip/cascade_clip_vitb16_512_coco171_st.py --num-gpus 4 \
#       train.init_checkpoint=./output/cascade_clip/coco171/model_0039999.pth
from ovseg_d2.data.vocab import unseen_classes

from .common import poly_schedule
from .cascade_clip_vitb16_512_coco171 import dataloader, model, optimizer, train

dataloader.train.dataset_names = "ovseg_coco_stuff171_train"  # all classes; unseen ones are pseudo-labelled
dataloader.train.total_batch_size = 16
model.unseen_train_classes = unseen_classes("coco_stuff171")
model.seen_bias = 0.0

train.init_checkpoint = "./output/cascade_clip/coco171/model_0039999.pth"
train.max_iter = 40000
lr_multiplier = poly_schedule(train.max_iter)
train.checkpointer = dict(period=4000, max_to_keep=3)
train.output_dir = "./output/cascade_clip/coco171_st"
