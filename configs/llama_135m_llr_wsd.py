# LLaMA-135M with LLR on warmup-stable-decay: LLR's lambda(t) is the WSD schedule, its refits compose with it.
include("llama_135m.py", "llr.py", "wsd.py")
