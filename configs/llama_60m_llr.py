# LLaMA-60M with LLR on AdamW: the size file, then the method file.
include("llama_60m.py", "llr.py")
