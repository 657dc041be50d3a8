# LLaMA-350M of the LLR paper, uniform AdamW baseline, FineWeb with GPT-2 BPE.
# Compose with a method file: torchrun --standalone --nproc_per_node=8 train.py configs/llama_350m.py configs/llr.py
include("reference_adamw.py")
model = "llama_350m"
dataset = "fineweb"            # python data/fineweb/prepare.py --max_tokens=7e9
block_size = 1024
batch_size = 16                # micro-batch per GPU
grad_accum = 32                # 32 x 16 x 1024 = 524,288 tokens per step (512 sequences)
max_iters = 13600              # 7.1B tokens
eval_interval = 400
eval_tokens = 10_000_000
log_interval = 10
strategy = "uniform"
learning_rate = 1e-3
out_dir = "out/llama_350m"
