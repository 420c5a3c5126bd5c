# OVSegmentor stage 2 (10 epochs, 8 x 128 images): + 0.1 x cross-image mask consistency with a
# momentum (EMA 0.99) image encoder; BERT frozen; initialised from stage 1's best VOC checkpoint.
#   python tools/train_net.py --config-file configs/ovsegmentor/ovsegmentor_vitb16_bert_stage2.py --num-gpus 8
# Cross-image lists: python tools/build_cross_image_lists.py --meta-file cc4m/cc4m.jsonl --output-dir cc4m/
# Evaluating a converted official checkpoint (tools/convert_checkpoint.py --method ovsegmentor):
#   python tools/train_net.py --config-file <this> --eval-only train.init_checkpoint=ovsegmentor_converted.pth
from detectron2.config import LazyCall as L

from ovseg_d2.clip import IMAGENET_MEAN, IMAGENET_STD
from ovseg_d2.data.image_text import ClassListPairing

from .ovsegmentor_vitb16_bert_stage1 import ITERS_PER_EPOCH, dataloader, lr_multiplier, model, optimizer, train

ITERS_PER_EPOCH_STAGE2 = 2 * ITERS_PER_EPOCH  # global batch 1024

model.mask_loss_weight = 0.1
model.freeze_text = True
model.image_weights = None  # from the stage-1 checkpoint
model.text_model = dict(model_type="bert")  # bert-base-uncased architecture, weights from the checkpoint

# torchvision RandomResizedCrop(224, 0.4-1) + flip; anchor and cross image transformed independently
dataloader.train.mapper.mapper.scale = (0.4, 1.0)
dataloader.train.mapper.mapper.auto_augment = None
dataloader.train.mapper.mapper.random_erasing = 0.0
dataloader.train.mapper.mapper.pixel_mean = IMAGENET_MEAN
dataloader.train.mapper.mapper.pixel_std = IMAGENET_STD
dataloader.train.pairing = L(ClassListPairing)(
    class_label_file="cc4m/class_label.json", sample_list_file="cc4m/sample_list.json", vocabulary="cc4m_entities"
)
dataloader.train.total_batch_size = 1024

# lr 1e-5 x 1024 / 4096 cosine to 1e-6 x 0.25, no warmup
optimizer.lr = 2.5e-6
lr_multiplier.scheduler.end_value = 0.1
lr_multiplier.warmup_length = 0.0
lr_multiplier.warmup_factor = 1.0

train.init_checkpoint = "./output/ovsegmentor/vitb16_bert_stage1/model_best.pth"
train.max_iter = 10 * ITERS_PER_EPOCH_STAGE2
train.eval_period = ITERS_PER_EPOCH_STAGE2
train.checkpointer = dict(period=ITERS_PER_EPOCH_STAGE2, max_to_keep=3)
train.output_dir = "./output/ovsegmentor/vitb16_bert_stage2"
