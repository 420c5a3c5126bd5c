# Training defaults for tools/train_net.py (LazyConfig `train` node).
train = dict(
    output_dir="./output",
    init_checkpoint="",
    max_iter=80000,
    device="auto",  # "cuda" when available, else "cpu"
    amp=dict(enabled=False),  # only takes effect on CUDA
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=3),
    eval_period=5000,
    log_period=20,
    seed=-1,
)
