# LLaMA-60M of the LLR paper (768 wide, 6 layers), uniform AdamW baseline, FineWeb with GPT-2 BPE.
# Compose with a method file: torchrun --standalone --nproc_per_node=8 train.py configs/llama_60m.py configs/llr.py
include("reference_adamw.py")
model = "llama_60m"
dataset = "fineweb"            # python data/fineweb/prepare.py --max_tokens=2e9
block_size = 1024
batch_size = 64                # micro-batch per GPU
grad_accum = 8                 # 8 x 64 x 1024 = 524,288 tokens per step (512 sequences)
max_iters = 3200               # 1.7B tokens
eval_interval = 400
eval_tokens = 10_000_000
log_interval = 10
strategy = "uniform"
learning_rate = 1e-3
out_dir = "out/llama_60m"
