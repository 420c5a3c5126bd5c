# TCL on the generated toy world (tools/make_toy_world.py), trained as the paper trains: on captions
# only (the world's webdataset shards; no mask at all), from the toy tiny CLIP
# (configs/toy/tiny_clip.json: patch 4, 3 blocks; tools/pretrain_toy_clip.py trains it), evaluated on
# toy_val (seen / unseen / hIoU; the toy benchmark has no background class, like VOC-20).
#   python tools/train_net.py --config-file configs/tcl/tcl_toy.py model.clip_weights=PATH train.device=cpu
# The recipe of configs/tcl/tcl_vitb16.py at toy scale: 48 px crops (the CLIP's pretraining size), the
# masker block unfrozen after 60 % of the run, whole-image evaluation at the toy images' 96 px.
from pathlib import Path

from detectron2.config import LazyCall as L

from ovseg_d2.data.metadata import prompt_classes
from ovseg_d2.engine.hooks import TrainableSchedule
from ovseg_d2.inference import InferencePolicy
from ovseg_d2.projects.tcl import TCL

from ..toy.data import dataloader as toy_data
from .tcl_vitb16 import MASKER_BLOCK, dataloader, lr_multiplier, optimizer, train

model = L(TCL)(
    clip_model=str(Path(__file__).parents[1] / "toy/tiny_clip.json"),  # independent of the working directory
    clip_weights=None,
    train_class_names=L(prompt_classes)(dataset_name="toy_val"),  # unused: TCL trains on captions
    templates="simple",  # the toy CLIP was pretrained on plain captions
    pamr=True,
    pad_divisor=4,  # the patch size
    prior_weight=0.3,
    freeze_masker_block=True,
    inference=L(InferencePolicy)(),  # whole 96x96 image
)

dataloader.train.shards = "toy_world/shards"
dataloader.train.mapper.image_size = 48
dataloader.train.mapper.scale = (0.8, 1.0)  # keep the captioned objects (as the toy CLIP pretraining)
dataloader.train.mapper.hflip = False  # toy captions state left/right relations
dataloader.train.mapper.auto_augment = None
dataloader.train.mapper.random_erasing = 0.0
dataloader.train.total_batch_size = 32
dataloader.train.shuffle_buffer = 2000
dataloader.train.num_workers = 0
dataloader.test = toy_data.test
dataloader.test_datasets = ["toy_val"]
dataloader.evaluator = dict(metric_convention=None)

optimizer.lr = 1e-3
optimizer.eps = 1e-6
optimizer.clip_grad_norm = 5.0
lr_multiplier.warmup_length = 0.1

train.max_iter = 1000
train.amp = dict(enabled=False)
train.seed = 0
train.eval_period = 0
train.log_period = 20
train.checkpointer = dict(period=1000, max_to_keep=1)
train.hooks = [L(TrainableSchedule)(iteration=600, trainable=MASKER_BLOCK)]
train.output_dir = "./output/toy/tcl"

# The toy-world leaderboard row (tools/run_demo.py --methods all; contract in ovseg_d2/data/toy/leaderboard.py).
leaderboard = dict(name="TCL", trained_on="captions only", overrides=["model.clip_weights={clip_weights}"])
