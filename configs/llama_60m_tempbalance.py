# LLaMA-60M with TempBalance on AdamW: the size file, then the method file.
include("llama_60m.py", "tempbalance.py")
