# LLaMA-135M, Muon + AdamW baseline with one LR for every group.
include("llama_135m.py", "uniform_muon.py")
