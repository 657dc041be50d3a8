# Method: Uniform-Upbound baseline, AdamW at llr_s2 x learning_rate for every group (LLR's top LR, uniformly).
strategy = "uniform_upbound"
llr_s2 = 5.0
out_dir = f"out/{model}_uniform_upbound"
