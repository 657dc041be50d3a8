# LLaMA-60M, uniform AdamW on warmup-stable-decay: the size file, then the schedule file.
include("llama_60m.py", "wsd.py")
