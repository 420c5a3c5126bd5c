# TCL ViT-B/16 without PAMR: background threshold 0.5 (the official README's no-PAMR command,
# `evaluate.pamr=false evaluate.bg_thresh=0.5`; paper appendix Table 3).
#   python tools/train_net.py --config-file configs/tcl/tcl_vitb16_nopamr.py --eval-only train.init_checkpoint=...
from .tcl_vitb16 import WITH_BACKGROUND, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.pamr = False
model.inference.background_threshold = {name: 0.5 for name in WITH_BACKGROUND}
train.output_dir = "./output/tcl/vitb16_nopamr"
