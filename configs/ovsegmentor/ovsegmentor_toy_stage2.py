# OVSegmentor stage 2 on the toy world: + 0.1 x cross-image mask consistency (momentum encoder), text
# tower frozen, from stage 1's final weights. Cross-image lists first:
#   python tools/build_cross_image_lists.py --meta-file $DETECTRON2_DATASETS/toy_world/captions/train.jsonl \
#       --output-dir $DETECTRON2_DATASETS/toy_world/cross_image --vocabulary configs/ovsegmentor/toy_entities.json
from detectron2.config import LazyCall as L

from ovseg_d2.data.image_text import ClassListPairing

from .ovsegmentor_toy_stage1 import HERE, dataloader, lr_multiplier, model, optimizer, train

model.mask_loss_weight = 0.1
model.freeze_text = True
dataloader.train.pairing = L(ClassListPairing)(
    class_label_file="toy_world/cross_image/class_label.json",
    sample_list_file="toy_world/cross_image/sample_list.json",
    vocabulary=str(HERE / "toy_entities.json"),
)
optimizer.lr = 1e-4
lr_multiplier.warmup_length = 0.0
lr_multiplier.warmup_factor = 1.0
train.init_checkpoint = "./output/toy/ovsegmentor_stage1/model_final.pth"
train.max_iter = 500
train.output_dir = "./output/toy/ovsegmentor_stage2"

# The toy-world leaderboard row: the cross-image lists, then from stage 1's final weights
# (tools/run_demo.py --methods all; contract in ovseg_d2/data/toy/leaderboard.py).
leaderboard = dict(
    name="OVSegmentor stage 2",
    trained_on="captions only",
    after="configs/ovsegmentor/ovsegmentor_toy_stage1.py",
    prepare=[dict(
        command=["{python}", "{repo}/tools/build_cross_image_lists.py", "--meta-file", "{world}/captions/train.jsonl",
                 "--output-dir", "{world}/cross_image", "--vocabulary", "{repo}/configs/ovsegmentor/toy_entities.json"],
        output="{world}/cross_image",
    )],
)
