# Method: LLR on Muon (hidden matrices) + AdamW (embedding, head, norms). After a size file.
include("llr.py")
strategy = "llr_muon"
muon_scale = "match_rms_adamw"  # Muon update RMS ~0.2 like AdamW: learning_rate serves both sides
fused = False                   # MuonAdamW has no fused kernel
out_dir = f"out/{model}_llr_muon"
