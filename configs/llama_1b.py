# LLaMA-1B of the LLR paper, uniform AdamW baseline, FineWeb with GPT-2 BPE.
# Compose with a method file: torchrun --standalone --nproc_per_node=8 train.py configs/llama_1b.py configs/llr.py
include("reference_adamw.py")
model = "llama_1b"
dataset = "fineweb"            # python data/fineweb/prepare.py --max_tokens=22e9
block_size = 1024
batch_size = 8                 # micro-batch per GPU
grad_accum = 64                # 64 x 8 x 1024 = 524,288 tokens per step (512 sequences)
max_iters = 40000              # 21.0B tokens
eval_interval = 400
eval_tokens = 10_000_000
log_interval = 10
strategy = "uniform"
learning_rate = 5e-4
out_dir = "out/llama_1b"
