# Two-stage toy recipe, stage 2: starts from stage 1's best checkpoint (dense_baseline_stage1.py) and
# fine-tunes at a tenth of the learning rate, evaluating an exponential moving average of the weights.
from .dense_baseline_stage1 import dataloader, lr_multiplier, model, optimizer, train

train.init_checkpoint = f"{train.output_dir}/model_best.pth"
train.output_dir = "./output/toy/dense_baseline_stage2"
train.best_metric = None
train.max_iter = 100
optimizer.lr = 1e-4
train.ema = dict(enabled=True, decay=0.99)
