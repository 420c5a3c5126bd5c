# CAT-Seg on the generated toy world (tools/make_toy_world.py): the same code path as the paper models,
# with a tiny CLIP (configs/toy/tiny_clip.json: patch 4, 3 blocks) and narrow aggregator widths.
#   python tools/train_net.py --config-file configs/catseg/catseg_toy.py model.clip_weights=PATH train.device=cpu
# 96x96 toy images -> CLIP at 96 -> 24x24 grid (Swin window 12 as in the paper) -> 96x96 logits.
from pathlib import Path

from detectron2.config import LazyCall as L

from ovseg_d2.data.metadata import prompt_classes
from ovseg_d2.projects.catseg import CATSeg

from ..common.optim import AdamW as optimizer
from ..common.schedule import cosine as lr_multiplier
from ..common.train import train
from ..toy.data import dataloader

model = L(CATSeg)(
    train_class_names=L(prompt_classes)(dataset_name="${dataloader.train.dataset_names}"),
    clip_model=str(Path(__file__).parents[1] / "toy/tiny_clip.json"),  # independent of the working directory
    clip_weights=None,
    clip_resolution=(96, 96),
    tap_blocks=(0, 1),  # the last of the 3 blocks is the dense value-path block
    tap_upsample_dims=(32, 16),
    clip_finetune="attention",
    templates="catseg",
    size_divisibility=32,
    train_pooling_size=(2, 2),
    test_pooling_size=(1, 1),
    sliding_window=False,  # toy images are already at the CLIP resolution
    aggregator=dict(
        hidden_dim=32,
        text_proj_dim=16,
        appearance_proj_dim=16,
        # The per-class decoder at full toy resolution dominates the cost: the narrowest widths
        # GroupNorm(dim // 16) allows (official B: (64, 32)).
        decoder_dims=(16, 16),
        decoder_guidance_proj_dims=(8, 8),
        num_layers=2,
        num_heads=2,
        window_size=12,
        pad_len=256,
    ),
)

optimizer.lr = 1e-3
optimizer.weight_decay = 1e-4
optimizer.lr_multipliers = {"clip_image": 0.1, "clip_text": 0.1}
optimizer.clip_grad_norm = 1.0

dataloader.train.total_batch_size = 4
train.max_iter = 200
train.ddp = dict(broadcast_buffers=False, find_unused_parameters=True, fp16_compression=False)
train.eval_period = 0
train.log_period = 20
train.checkpointer = dict(period=100, max_to_keep=2)
train.output_dir = "./output/toy/catseg"

# The toy-world leaderboard row (tools/run_demo.py --methods all; contract in ovseg_d2/data/toy/leaderboard.py).
leaderboard = dict(name="CAT-Seg", trained_on="seen masks", overrides=["model.clip_weights={clip_weights}"])
