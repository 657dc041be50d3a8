# LLaMA-60M with AlphaDecay on AdamW: the size file, then the method file.
include("llama_60m.py", "alphadecay.py")
