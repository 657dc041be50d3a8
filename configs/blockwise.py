# Method: blockwise (sharpness-disparity) baseline: fixed multipliers by kind, norm 1, q/k 8, v/o 4, mlp 6,
# embed/head 10, on a tenth of the size file's learning rate (135M: 1e-4, peaks 1e-4 ... 1e-3). Written as
# lr_mult on uniform AdamW; --strategy=blockwise applies the same multipliers by kind (tests/test_lr_mult.py).
strategy = "uniform"
lr_mult = [("blocks.*.attn.[qk]", 8.0), ("blocks.*.attn.[vo]", 4.0), ("blocks.*.mlp.*", 6.0), ("*embed", 10.0)]
if not model.startswith("gpt"):  # GPT ties its head to the embedding: there is no head group
    lr_mult.append(("head", 10.0))
learning_rate = learning_rate / 10
out_dir = f"out/{model}_blockwise"
