# CAT-Seg (CVPR 2024 version), CLIP ViT-B/16 at 384, trained on COCO-Stuff-171 (official configs/vitb_384.yaml).
#   train:     python tools/train_net.py --config-file configs/catseg/catseg_vitb16_384_coco_stuff.py --num-gpus 4 \
#                  model.clip_weights=/path/to/ViT-B-16.pt
#   evaluate:  python tools/train_net.py --config-file configs/catseg/catseg_vitb16_384_coco_stuff.py --eval-only \
#                  train.init_checkpoint=/path/to/catseg_base_converted.pth
#              (convert the official model_base.pth first: tools/convert_checkpoint.py --method catseg)
from detectron2.config import LazyCall as L

from ovseg_d2.data.metadata import prompt_classes
from ovseg_d2.projects.catseg import CATSeg

from ..common.data import dataloader
from ..common.optim import AdamW as optimizer
from ..common.schedule import cosine as lr_multiplier
from ..common.train import train

model = L(CATSeg)(
    train_class_names=L(prompt_classes)(dataset_name="${dataloader.train.dataset_names}"),
    clip_model="ViT-B-16-quickgelu",  # OpenAI ViT-B/16 (QuickGELU), positional table 14x14 -> resized to 24x24
    clip_weights=None,  # OpenAI ViT-B-16.pt to train from CLIP; not needed with a converted CAT-Seg checkpoint
    clip_resolution=(384, 384),
    tap_blocks=(3, 7),
    tap_upsample_dims=(256, 128),
    clip_finetune="attention",  # q/v projection weights of both CLIP towers
    templates="catseg",  # 'A photo of a {} in the scene'
    size_divisibility=32,
    ignore_value=255,
    train_pooling_size=(2, 2),
    test_pooling_size=(1, 1),  # eval.sh setting (the official in-training eval used 2x2)
    sliding_window=True,  # eval.sh: 640x640 squash, 4 crops 384 / stride 256 + global view
    window=384,
    stride=256,
    sliding_resize=(640, 640),
    global_view=True,
    aggregator=dict(
        hidden_dim=128,
        text_proj_dim=128,
        appearance_proj_dim=128,
        decoder_dims=(64, 32),
        decoder_guidance_proj_dims=(32, 16),
        num_layers=2,
        num_heads=4,
        window_size=12,
        pad_len=256,
    ),
)

# Data: COCO-Stuff-171 train, resize short side 384 -> random crop 384 -> ColorAugSSD -> flip; 4 images/iter.
dataloader.train.dataset_names = "ovseg_coco_stuff171_train"
dataloader.train.total_batch_size = 4
# Evaluation on the six benchmarks of the paper (test-time vocabulary from each dataset's metadata).
dataloader.test_datasets = [
    "ovseg_ade847_val",
    "ovseg_pc459_val",
    "ovseg_ade150_val",
    "ovseg_pc59_val",
    "ovseg_voc20_val",
    "ovseg_voc20b_val",
]

# AdamW 2e-4, wd 1e-4 (0 on norm layers), CLIP x0.01, full-model grad-norm clipping at 0.01.
optimizer.lr = 2e-4
optimizer.weight_decay = 1e-4
optimizer.weight_decay_norm = 0.0
optimizer.weight_decay_embed = 0.0
optimizer.lr_multipliers = {"clip_image": 0.01, "clip_text": 0.01}
optimizer.clip_grad_norm = 0.01

# Cosine to 0 over 80k iterations, no warmup.
train.max_iter = 80000
# The q projection of the last CLIP vision block is trainable (official rule) but unused by the dense
# value-path block, so it never receives a gradient: DDP must tolerate unused parameters.
train.ddp = dict(broadcast_buffers=False, find_unused_parameters=True, fp16_compression=False)
train.eval_period = 5000
train.checkpointer = dict(period=5000, max_to_keep=3)
train.output_dir = "./output/catseg/vitb16_384_coco_stuff"
