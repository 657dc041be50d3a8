# Fine-tuning with LLR: roberta-base on GLUE RTE, the model the LLR paper fine-tunes, with its layerwise LRs
# (configs/llr.py's rule: peaks in [1, 5] x learning_rate from each matrix's alpha; refits in the first 20 %).
include("finetune_rte.py", "llr.py")
hf_model = "roberta-base"
learning_rate = 1e-5           # LLR's peaks reach 5 x this
llr_every, llr_ramp = 50, 20   # about 470 updates: refits at 1, 50 (a fifth of the run), each ramped over 20
out_dir = "out/finetune_roberta_rte_llr"
