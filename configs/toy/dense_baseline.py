# The minimal open-vocabulary baseline (ovseg_d2.modeling.DenseCLIPBaseline): frozen CLIP dense
# patch-text cosine similarity + a small trainable conv head, on the toy world's seen classes.
#   python tools/train_net.py --config-file configs/toy/dense_baseline.py model.clip_weights=PATH
# `model.head="none"` gives the training-free (MaskCLIP-style) baseline: evaluate it with
# `--eval-only train.init_checkpoint=none` (no checkpoint: the CLIP weights come from model.clip_weights).
from pathlib import Path

from detectron2.config import LazyCall as L

from ovseg_d2.data.metadata import prompt_classes
from ovseg_d2.modeling import DenseCLIPBaseline

from ..common.optim import AdamW as optimizer
from ..common.schedule import cosine as lr_multiplier
from ..common.train import train
from .data import dataloader

model = L(DenseCLIPBaseline)(
    clip_model=str(Path(__file__).with_name("tiny_clip.json")),  # independent of the working directory
    clip_weights=None,
    train_class_names=L(prompt_classes)(dataset_name="${dataloader.train.dataset_names}"),
    templates="simple",
    clip_resolution=(96, 96),
    head="conv",
)

optimizer.lr = 1e-3
optimizer.weight_decay = 0.0

train.max_iter = 200
train.eval_period = 0
train.log_period = 20
train.checkpointer = dict(period=100, max_to_keep=2)
train.output_dir = "./output/toy/dense_baseline"

# The toy-world leaderboard's floor (tools/run_demo.py --methods all; contract in ovseg_d2/data/toy/leaderboard.py).
leaderboard = dict(
    name="dense CLIP baseline (training-free)",
    trained_on="nothing",
    overrides=["model.head=none", "model.clip_weights={clip_weights}", "train.init_checkpoint=none"],
    eval_only=True,
    reference=True,
)
