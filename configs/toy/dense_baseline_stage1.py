# A two-stage recipe on the toy world (the pattern of OVSegmentor's stage-1 model selection), stage 1:
# the dense baseline's head, evaluated every 50 iterations; model_best.pth keeps the best toy_val mIoU.
#   python tools/train_net.py --config-file configs/toy/dense_baseline_stage1.py model.clip_weights=PATH
#   python tools/train_net.py --config-file configs/toy/dense_baseline_stage2.py model.clip_weights=PATH
from .dense_baseline import dataloader, lr_multiplier, model, optimizer, train

train.eval_period = 50
train.best_metric = dict(name="toy_val/sem_seg/mIoU", mode="max")
train.output_dir = "./output/toy/dense_baseline_stage1"
