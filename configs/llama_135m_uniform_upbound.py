# LLaMA-135M of the LLR paper (specs/models.md §1), Uniform-Upbound baseline: AdamW at llr_s2 x learning_rate everywhere, FineWeb with GPT-2 BPE.
# 8 GPUs: torchrun --standalone --nproc_per_node=8 train.py configs/llama_135m_uniform_upbound.py
model = "llama_135m"
dataset = "fineweb"            # python data/fineweb/prepare.py --max_tokens=3e9
block_size = 1024
batch_size = 32                # micro-batch per GPU
grad_accum = 16                # 16 x 32 x 1024 = 524,288 tokens per step (512 sequences)
max_iters = 5200               # ~2.7B tokens
eval_interval = 400
eval_tokens = 10_000_000
log_interval = 10

strategy = "uniform_upbound"
learning_rate = 1e-3
llr_s2 = 5.0                   # every group at 5e-3
warmup_frac = 0.1
min_lr_ratio = 0.1
# AdamW exactly as the reference builds it: torch defaults for betas/eps, decay 0.1 on every parameter
beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
weight_decay = 0.1
decay_norms = True
grad_clip = 0.0                # the reference never clips
fused = True
out_dir = "out/llama_135m_uniform_upbound"
