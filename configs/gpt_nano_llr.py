# GPT-2 124M (nanoGPT's shape) with LLR: 10B FineWeb-Edu tokens (specs/models.md §3).
# 8 GPUs: torchrun --standalone --nproc_per_node=8 train.py configs/gpt_nano_llr.py
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

strategy = "llr"
# LLR as released (specs/llr.md §11): alpha -> peak LR in [1, 5] x learning_rate, refit every 100 steps
# with a 50-step soft switch during the first 20% of training, then frozen
llr_s1, llr_s2 = 1.0, 5.0
llr_every, llr_ramp, llr_ratio = 100, 50, 0.2
llr_method = "median"
llr_embed = "max"              # the tied embedding/head matrix is one embed group
learning_rate = 6e-4
min_lr_ratio = 0.1
beta1, beta2, adam_eps = 0.9, 0.95, 1e-8
weight_decay = 0.1             # matrices only (decay_norms = False), as nanoGPT
grad_clip = 1.0
fused = True
out_dir = "out/gpt_nano_llr"
