# LLaMA-350M with LLR on AdamW: the size file, then the method file.
include("llama_350m.py", "llr.py")
