# Method: blockwise (sharpness-disparity) baseline: fixed multipliers by kind, norm 1, q/k 8, v/o 4, mlp 6,
# embed/head 10, on a tenth of the size file's learning rate (135M: 1e-4, peaks 1e-4 ... 1e-3).
strategy = "blockwise"
learning_rate = learning_rate / 10
out_dir = f"out/{model}_blockwise"
