# LLaMA-135M, Uniform-Upbound baseline.
include("llama_135m.py", "uniform_upbound.py")
