# LLaMA-135M with LLR on Muon + AdamW.
include("llama_135m.py", "llr_muon.py")
