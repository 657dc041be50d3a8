# LLaMA-135M, blockwise (sharpness-disparity) baseline.
include("llama_135m.py", "blockwise.py")
