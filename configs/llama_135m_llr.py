# LLaMA-135M with LLR on AdamW: the size file, then the method file.
include("llama_135m.py", "llr.py")
