# The embedded default until 2026-12-02, and what docs/results.md measured: llama_tiny with LLR on
# Shakespeare bytes, 400 steps of 16 x 256 tokens, evals of 65,536 tokens every 100 steps. About 3.5
# minutes on a 2-core AVX-512 Xeon in fp32, 13 on a 2-core AVX2-only CPU. `python train.py configs/tiny_400.py`
model = "llama_tiny"           # 4 layers, 256 wide, vocab 256 (3.3M parameters)
dataset = "shakespeare"
block_size = 256
batch_size = 16
grad_accum = 1
max_iters = 400
eval_interval = 100
eval_tokens = 65536
strategy = "llr"
llr_every = 20                 # refit at t = 1, 20, 40, 60, 80 (the first 20%), then frozen
llr_ramp = 10
learning_rate = 3e-3
beta2 = 0.95
grad_clip = 1.0
out_dir = "out"
