# Method: heavy-tail guided layerwise LRs (LLR) on AdamW, as released: each matrix's alpha maps to a peak
# LR in [1, 5] x learning_rate, refit every 100 steps with a 50-step soft switch during the first 20%
# of training, then frozen (docs/llr.md). Put it after a size file: train.py configs/llama_135m.py configs/llr.py
strategy = "llr"
llr_s1, llr_s2 = 1.0, 5.0
llr_every, llr_ramp, llr_ratio = 100, 50, 0.2
llr_method = "median"
llr_embed = "max"              # embedding and head at the top of the range (GPT: the tied matrix is one embed group)
out_dir = f"out/{model}_llr"
