# Method: Muon + AdamW with one LR for every group (the baseline of llr_muon). After a size file.
strategy = "uniform_muon"
muon_scale = "match_rms_adamw"  # Muon update RMS ~0.2 like AdamW: learning_rate serves both sides
fused = False                   # MuonAdamW has no fused kernel
out_dir = f"out/{model}_uniform_muon"
