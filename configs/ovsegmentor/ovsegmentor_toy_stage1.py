# OVSegmentor on the generated toy world (tools/make_toy_world.py), trained on the toy CAPTIONS only
# (no masks), as the paper trains on CC4M: the same code path as the paper models at tiny width
# (GroupViT 2+2 blocks of width 64, 16 -> 8 groups over a 12x12 grid of 8-px patches; a 2-layer BERT of
# width 64 with a toy WordPiece vocabulary; entities = the colour and shape words).
#   python tools/train_net.py --config-file configs/ovsegmentor/ovsegmentor_toy_stage1.py train.device=cpu
# Evaluated on toy_val (30 classes, background ignored: no background threshold).
from pathlib import Path

from detectron2.config import LazyCall as L

from ovseg_d2.clip import IMAGENET_MEAN, IMAGENET_STD
from ovseg_d2.data.image_text import EntityQuestionMapper, ImageTextMapper, build_image_text_train_loader
from ovseg_d2.data.metadata import prompt_classes
from ovseg_d2.inference import InferencePolicy
from ovseg_d2.projects.ovsegmentor import OVSegmentor

from ..common.optim import AdamW as optimizer
from ..common.schedule import cosine as lr_multiplier
from ..common.train import train
from ..toy.data import dataloader

HERE = Path(__file__).parent  # files named relative to this config, not to the working directory

model = L(OVSegmentor)(
    train_class_names=L(prompt_classes)(dataset_name="toy_val"),
    image_encoder=dict(
        embed_dim=64, depth=4, num_heads=4, patch_size=8, img_size=96, grouping_after=2,
        num_group_tokens=16, num_output_groups=8, drop_path_rate=0.0,
    ),
    text_model=dict(
        model_type="bert", vocab_size=98, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=80, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    ),
    tokenizer=str(HERE / "toy_tokenizer"),
    context_length=32,
    output_dim=32,
    projector_inner_dim=128,
    entity_loss_weight=1.0,
    mask_loss_weight=0.0,
    templates="simple",
    top_k_classes=5,
    pixel_mean=IMAGENET_MEAN,
    pixel_std=IMAGENET_STD,
    inference=L(InferencePolicy)(),  # 96x96 toy images: one whole-image view
)

dataloader.train = L(build_image_text_train_loader)(
    meta_file="toy_world/captions/train.jsonl",
    image_root="toy_world",
    # a mild crop keeps every captioned object; no flip (captions state left/right)
    mapper=L(EntityQuestionMapper)(
        mapper=L(ImageTextMapper)(
            image_size=96, is_train=True, scale=(0.8, 1.0), hflip=False, pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD,
        ),
        vocabulary=str(HERE / "toy_entities.json"),
    ),
    total_batch_size=32,
    shuffle_buffer=1000,
    num_workers=0,
)
dataloader.evaluator = dict(metric_convention=None)

optimizer.lr = 1e-3
optimizer.weight_decay = 0.05
optimizer.no_decay_1d = True
optimizer.clip_grad_norm = 5.0
lr_multiplier.warmup_length = 0.05
lr_multiplier.warmup_factor = 0.025

train.max_iter = 1500
train.seed = 0
train.eval_period = 0
train.log_period = 50
train.checkpointer = dict(period=5000, max_to_keep=1)
train.output_dir = "./output/toy/ovsegmentor_stage1"

# The toy-world leaderboard row (tools/run_demo.py --methods all; contract in ovseg_d2/data/toy/leaderboard.py).
# No tiny CLIP: the same run serves every pretraining seed.
leaderboard = dict(name="OVSegmentor stage 1", trained_on="captions only")
