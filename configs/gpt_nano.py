# GPT-2 124M (nanoGPT's shape) the build-nanogpt way: 10B FineWeb-Edu tokens, uniform AdamW baseline.
# Compose with a method file: torchrun --standalone --nproc_per_node=8 train.py configs/gpt_nano.py configs/llr.py
model = "gpt_nano"
dataset = "fineweb_edu"        # python data/fineweb/prepare.py --edu --max_tokens=1e10
block_size = 1024
batch_size = 64                # micro-batch per GPU
grad_accum = 8                 # 8 x 64 x 1024 = 524,288 tokens per step
max_iters = 19073              # ~10B tokens
warmup_iters = 715
eval_interval = 250
eval_tokens = 10_000_000
log_interval = 10
strategy = "uniform"
learning_rate = 6e-4
min_lr_ratio = 0.1
beta1, beta2, adam_eps = 0.9, 0.95, 1e-8
weight_decay = 0.1             # matrices only (decay_norms = False), as nanoGPT
grad_clip = 1.0
fused = True
out_dir = "out/gpt_nano"
