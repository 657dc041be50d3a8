# Method: muP (docs/mup.md). Tune learning_rate (and the rest) on a narrow proxy of base_width, then train
# any width with the same values: hidden-matrix init and Adam LRs scale with base_width / n_embd, the logits
# with 1/m, embeddings and head keep the proxy's. The proxy is the size file at --n_embd=256: under mup a width
# override scales n_head (head dim 64 kept: 4 heads) and ffn_hidden with it (llama_60m 504, llama_135m 688), as the
# multipliers assume; --dry_run prints them. E.g. a learning_rate sweep with eval/sweep.py at that width.
# Put it after a size file: train.py configs/llama_135m.py configs/mup.py
parametrization = "mup"
base_width = 256               # n_embd of the tuned proxy
out_dir = f"out/{model}_mup"
