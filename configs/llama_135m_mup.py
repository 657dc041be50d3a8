# LLaMA-135M under muP: the size file, then the method file.
include("llama_135m.py", "mup.py")
