# The paper's stage-2 recipe (configs/ovsegmentor/ovsegmentor_vitb16_bert_stage2.py: losses, momentum
# encoder, frozen text tower, evaluation protocol with per-dataset background thresholds, short side 448
# and 448/224 sliding windows) at tiny width, trained on the toy world's captions; for tests and smoke runs:
#   python tools/train_net.py --config-file configs/ovsegmentor/ovsegmentor_tiny.py --num-gpus 2 train.device=cpu
# Needs $DETECTRON2_DATASETS/toy_world with cross_image/{class_label,sample_list}.json
# (tools/build_cross_image_lists.py, see ovsegmentor_toy_stage2.py).
from .ovsegmentor_toy_stage2 import dataloader as toy_dataloader
from .ovsegmentor_toy_stage2 import model as toy_model
from .ovsegmentor_vitb16_bert_stage2 import dataloader, lr_multiplier, model, optimizer, train

for key in ("image_encoder", "text_model", "tokenizer", "context_length", "output_dim", "projector_inner_dim"):
    model[key] = toy_model[key]
model.image_encoder.patch_size = 16  # the paper's patches (6x6 on the 96-px toy images; 28x28 per test window)
model.image_weights = None
model.sync_batchnorm = False  # CPU processes (SyncBatchNorm needs GPUs)

dataloader.train = toy_dataloader.train
dataloader.train.total_batch_size = 4
optimizer.lr = 1e-4
train.init_checkpoint = ""
train.hooks = []
train.max_iter = 10
train.eval_period = 0
train.best_metric = None
train.log_period = 5
train.checkpointer = dict(period=1000, max_to_keep=1)
train.output_dir = "./output/ovsegmentor/tiny"
