# Cascade-CLIP, transductive zero-shot on PASCAL VOC-20 (15 seen / 5 unseen): official
# configs/voc_20/vpt_seg_zero_vit-b_512x512_10k_12_10_st.py.
# Self-training restarts from the inductive run at half its schedule (load_from: fresh optimizer and
# warmup) and trains 10000 more iterations on all classes: pixels annotated with an unseen class get
# the online pseudo-label argmax over the unseen classes of the same forward; no test-time bias.
# Published: mIoU(S) 93.6 / mIoU(U) 93.2 / hIoU 93.4.
#   python tools/train_net.py --config-file configs/cascade_clip/cascade_clip_vitb16_512_voc20_st.py --num-gpus 4 \
#       train.init_checkpoint=./output/cascade_clip/voc20/model_0009999.pth
from ovseg_d2.data.vocab import unseen_classes

from .common import poly_schedule
from .cascade_clip_vitb16_512_voc20 import dataloader, model, optimizer, train

dataloader.train.dataset_names = "ovseg_voc20_train"  # all classes; unseen ones are pseudo-labelled
dataloader.train.total_batch_size = 32
model.unseen_train_classes = unseen_classes("voc20")
model.seen_bias = 0.0

train.init_checkpoint = "./output/cascade_clip/voc20/model_0009999.pth"
train.max_iter = 10000
lr_multiplier = poly_schedule(train.max_iter)
train.checkpointer = dict(period=1000, max_to_keep=3)
train.output_dir = "./output/cascade_clip/voc20_st"
