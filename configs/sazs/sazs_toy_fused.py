# SAZS toy model evaluated with eigen-segments, without the ground truth (eval_mode "fused": each eigen-segment
# takes the class the model predicts on most of it when they agree, IoU >= fusion_min_iou). The cache holds the
# toy_val eigenvectors (keys of the last block of the tiny toy CLIP's image tower, see projects/sazs/README.md).
#   python tools/train_net.py --config-file configs/sazs/sazs_toy_fused.py --eval-only \
#       train.init_checkpoint=output/toy/sazs/model_final.pth model.eigen_segments.root=EIGS train.device=cpu
from detectron2.config import LazyCall as L

from ovseg_d2.data.spectral import EigenSegmentCache

from .sazs_toy import dataloader, lr_multiplier, model, optimizer, train

model.eval_mode = "fused"
model.eigen_segments = L(EigenSegmentCache)(root="./output/toy/sazs_eigs", num_segments=5)
model.fusion_min_iou = 0.5

# The toy-world leaderboard row: the eigen cache of the tiny CLIP, then sazs_toy.py's final weights evaluated
# (tools/run_demo.py --methods all; contract in ovseg_d2/data/toy/leaderboard.py).
leaderboard = dict(
    name="SAZS, fused with eigen-segments (no ground truth used)",
    trained_on="seen masks (fold-style episodes)",
    overrides=[
        "model.text_tower.weights={clip_weights}",
        "model.eigen_segments.root={clip_dir}/sazs_eigs",
        "train.init_checkpoint={parent_checkpoint}",
    ],
    after="configs/sazs/sazs_toy.py",
    eval_only=True,
    prepare=[dict(
        command=[
            "{python}", "{repo}/tools/build_eigen_cache.py", "--dataset", "toy_val", "--output", "{clip_dir}/sazs_eigs",
            "--clip-model", "{repo}/configs/toy/tiny_clip.json", "--weights", "{clip_weights}",
        ],
        output="{clip_dir}/sazs_eigs",
    )],
)
