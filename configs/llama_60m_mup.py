# LLaMA-60M under muP: the size file, then the method file.
include("llama_60m.py", "mup.py")
