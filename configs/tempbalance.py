# Method: TempBalance (Zhou et al., NeurIPS 2023, arXiv 2312.00359) on AdamW: each matrix's PL_Alpha_Hill (xmin at the
# median) maps linearly to an LR multiplier in [0.5, 1.5] x learning_rate x lambda(t), refit once per "epoch" through
# all of training, switched at once (docs/llr.md). Put it after a size file: train.py configs/llama_135m.py configs/tempbalance.py
strategy = "tempbalance"
tb_s1, tb_s2 = 0.5, 1.5
tb_every = 0                   # 0: every optim.epoch_iters updates (epoch_iters, or a tenth of max_iters)
out_dir = f"out/{model}_tempbalance"
