# LLaMA-135M with AlphaDecay on AdamW: the size file, then the method file.
include("llama_135m.py", "alphadecay.py")
