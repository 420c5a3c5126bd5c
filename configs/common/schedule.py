# Learning-rate multipliers (fvcore ParamScheduler wrapped with a warmup, detectron2 style).
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler

# Cosine from 1 to 0 over the whole run, no warmup (CAT-Seg's WarmupCosineLR with 0 warmup).
cosine = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.0),
    warmup_length=0.0,
    warmup_factor=1.0,
)
