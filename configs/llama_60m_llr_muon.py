# LLaMA-60M of the LLR paper (768 wide, 6 layers) (specs/models.md §1), with heavy-tail guided layerwise LRs (LLR) on Muon + AdamW, FineWeb with GPT-2 BPE.
# 8 GPUs: torchrun --standalone --nproc_per_node=8 train.py configs/llama_60m_llr_muon.py
model = "llama_60m"
dataset = "fineweb"            # python data/fineweb/prepare.py --max_tokens=2e9
block_size = 1024
batch_size = 64                # micro-batch per GPU
grad_accum = 8                 # 8 x 64 x 1024 = 524,288 tokens per step (512 sequences)
max_iters = 3200               # 1.7B tokens
eval_interval = 400
eval_tokens = 10_000_000
log_interval = 10

strategy = "llr_muon"
# LLR as released (specs/llr.md §11): alpha -> peak LR in [1, 5] x learning_rate, refit every 100 steps
# with a 50-step soft switch during the first 20% of training, then frozen
llr_s1, llr_s2 = 1.0, 5.0
llr_every, llr_ramp, llr_ratio = 100, 50, 0.2
llr_method = "median"
llr_embed = "max"              # embedding and head at the top of the range
muon_scale = "match_rms_adamw"  # Muon update RMS ~0.2 like AdamW: learning_rate serves both sides
learning_rate = 1e-3
warmup_frac = 0.1
min_lr_ratio = 0.1
# AdamW exactly as the reference builds it: torch defaults for betas/eps, decay 0.1 on every parameter
beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
weight_decay = 0.1
decay_norms = True
grad_clip = 0.0                # the reference never clips
fused = True
out_dir = "out/llama_60m_llr_muon"
