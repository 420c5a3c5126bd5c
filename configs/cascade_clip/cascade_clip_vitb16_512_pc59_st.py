# Cascade-CLIP, transductive zero-shot on PASCAL Context-59 (49 seen / 10 unseen): official
# configs/context_59/vpt_seg_zero_vit-b_512x512_20k_12_10_st.py.
# Self-training restarts from the inductive run at half its schedule (load_from: fresh optimizer and
# warmup) and trains 20000 more iterations on all classes: pixels annotated with an unseen class get
# the online pseudo-label argmax over the unseen classes of the same forward; no test-time bias.
# Published: mIoU(S) 56.4 / mIoU(U) 55.0 / hIoU 55.7.
#   python tools/train_net.py --config-file configs/cascade_clip/cascade_clip_vitb16_512_pc59_st.py --num-gpus 4 \
#       train.init_checkpoint=./output/cascade_clip/pc59/model_0019999.pth
from ovseg_d2.data.vocab import unseen_classes

from .common import poly_schedule
from .cascade_clip_vitb16_512_pc59 import dataloader, model, optimizer, train

dataloader.train.dataset_names = "ovseg_pc59_train"  # all classes; unseen ones are pseudo-labelled
dataloader.train.total_batch_size = 16
model.unseen_train_classes = unseen_classes("pc59")
model.seen_bias = 0.0

train.init_checkpoint = "./output/cascade_clip/pc59/model_0019999.pth"
train.max_iter = 20000
lr_multiplier = poly_schedule(train.max_iter)
train.checkpointer = dict(period=2000, max_to_keep=3)
train.output_dir = "./output/cascade_clip/pc59_st"
