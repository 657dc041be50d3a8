# LLaMA-1B with LLR on AdamW: the size file, then the method file.
include("llama_1b.py", "llr.py")
