# Transductive self-training on the toy world: restarts from the inductive toy run at half its schedule
# and trains on all 30 classes of toy_train_all, pseudo-labelling the pixels of the 6 unseen classes.
#   python tools/train_net.py --config-file configs/cascade_clip/cascade_clip_toy_st.py \
#       model.clip_weights=/tmp/demo_run/tiny_clip.pt train.device=cpu \
#       train.init_checkpoint=./output/toy/cascade_clip/model_0000299.pth
from ovseg_d2.data.toy.world import UNSEEN_CLASS_IDS

from .cascade_clip_toy import dataloader, model, optimizer, poly_schedule, train

dataloader.train.dataset_names = "toy_train_all"
model.unseen_train_classes = list(UNSEEN_CLASS_IDS)
model.seen_bias = 0.0
train.init_checkpoint = "./output/toy/cascade_clip/model_0000299.pth"
train.max_iter = 300
lr_multiplier = poly_schedule(train.max_iter, warmup_iters=20)
train.output_dir = "./output/toy/cascade_clip_st"

# The toy-world leaderboard row: from the inductive run's checkpoint at iteration 300
# (tools/run_demo.py --methods all; contract in ovseg_d2/data/toy/leaderboard.py).
leaderboard = dict(
    name="Cascade-CLIP transductive",
    trained_on="seen masks + unseen pseudo-labels",
    overrides=["model.clip_weights={clip_weights}"],
    after="configs/cascade_clip/cascade_clip_toy.py",
    checkpoint="model_0000299.pth",
)
