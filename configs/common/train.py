# Training defaults for tools/train_net.py (LazyConfig `train` node).
train = dict(
    output_dir="./output",
    init_checkpoint="",  # a checkpoint holding EMA weights (`model_ema`) initialises from those
    # --eval-only and the demo load init_checkpoint strictly (missing / unexpected / mis-shaped keys are
    # an error); False loads the matching keys only. Fine-tuning init is always lenient (keys logged).
    # init_checkpoint="none" runs the model with the weights its config builds (random + e.g. clip_weights).
    strict_load=True,
    max_iter=80000,
    device="auto",  # "cuda" when available, else "cpu"
    amp=dict(enabled=False),  # only takes effect on CUDA
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=3),
    eval_period=5000,
    log_period=20,
    seed=-1,  # -1: drawn at random, logged and saved in checkpoints; --resume reuses the saved seed
    # Extra hooks after the default ones: [L(HookClass)(...), ...] (ovseg_d2.engine.hooks), e.g.
    # L(TrainableSchedule)(iteration=30000, trainable=[r"^backbone\.blocks\.11\."]).
    hooks=[],
    # Exponential moving average of the weights; evaluation then uses (and checkpoints carry) them.
    ema=dict(enabled=False, decay=0.9999),
    # model_best.pth by an evaluation metric, e.g. dict(name="ovseg_ade150_val/sem_seg/mIoU", mode="max").
    best_metric=None,
)
