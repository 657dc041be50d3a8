# LLaMA-135M, uniform AdamW on warmup-stable-decay: the size file, then the schedule file.
include("llama_135m.py", "wsd.py")
