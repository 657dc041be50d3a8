# LLaMA-135M with TempBalance on AdamW: the size file, then the method file.
include("llama_135m.py", "tempbalance.py")
