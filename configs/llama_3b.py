# LLaMA-3B of the LLR paper (steps and LR from its figures), uniform AdamW baseline, FineWeb with GPT-2 BPE.
# Compose with a method file: torchrun --standalone --nproc_per_node=8 train.py configs/llama_3b.py configs/llr.py
include("reference_adamw.py")
model = "llama_3b"
dataset = "fineweb"            # python data/fineweb/prepare.py --max_tokens=33e9
block_size = 1024
batch_size = 4                 # micro-batch per GPU
grad_accum = 128               # 128 x 4 x 1024 = 524,288 tokens per step (512 sequences)
max_iters = 60000              # 31.5B tokens
eval_interval = 400
eval_tokens = 10_000_000
log_interval = 10
strategy = "uniform"
learning_rate = 3e-4
out_dir = "out/llama_3b"
