# Method: AlphaDecay (He et al., NeurIPS 2025, arXiv 2506.14562) on AdamW: uniform LR; each matrix's weight decay is
# weight_decay x a linear map of its PL_Alpha_Hill onto [0.67, 1.5] (heavier tail, less decay), refit every 500 updates
# through all of training (docs/llr.md). Put it after a size file: train.py configs/llama_135m.py configs/alphadecay.py
strategy = "alphadecay"
ad_s1, ad_s2 = 0.67, 1.5
ad_every = 500
out_dir = f"out/{model}_alphadecay"
