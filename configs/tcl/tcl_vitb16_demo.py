# The demo the authors offer (demo.ipynb, HuggingFace space): free-form text queries (proper nouns,
# phrases: "a photo of Michael Jackson.", "red banana") used as they are (no template ensembling),
# the whole image at short side 224, PAMR at the input resolution after the masks.
#   python tools/demo.py --config-file configs/tcl/tcl_vitb16_demo.py --weights tcl_vitb16.pth \
#       --input photo.jpg --vocabulary "Michael Jackson, the lawn, trees, and fallen leaves" \
#       --output demo_out/ --min-score 0.4
# Background (optional): `--min-score 0.4` leaves pixels where every query scores below 0.4 unlabeled
# (TCL's background rule; 0.5 without PAMR). PAMR off: `model.inference.refine=null`. Template
# ensembling on: `model.templates=tcl_custom`.
from detectron2.config import LazyCall as L
from detectron2.data.transforms import ResizeShortestEdge
from PIL import Image

from ovseg_d2.inference import InferencePolicy
from ovseg_d2.inference.pamr import PAMR

from .tcl_vitb16 import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.templates = "identity"
model.pamr = False  # refined at the input resolution by the policy instead
model.inference = L(InferencePolicy)(refine=L(PAMR)(iterations=10, dilations=(1, 2, 4, 8, 12, 24)))
dataloader.test.mapper.augmentations = [L(ResizeShortestEdge)(short_edge_length=224, max_size=100000, interp=Image.BICUBIC)]
