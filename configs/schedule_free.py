# Method: schedule-free AdamW (Defazio et al. 2024). No decay: the LR warms up, then stays; evaluation and
# checkpoints use the running average x of the iterates (docs/strategies.md). Its authors run it at 1-10x the
# scheduled AdamW LR; tune it with eval/sweep.py. Needs `pip install schedulefree`.
# Put it after a size file: train.py configs/llama_135m.py configs/schedule_free.py
strategy = "schedule_free"
out_dir = f"out/{model}_schedule_free"
