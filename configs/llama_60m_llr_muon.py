# LLaMA-60M with LLR on Muon + AdamW.
include("llama_60m.py", "llr_muon.py")
