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
