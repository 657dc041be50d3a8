# Fine-tuning with LLR: roberta-base on the LLR paper's seven commonsense tasks together, as multiple choice
# (OpenBookQA, WinoGrande, ARC-Challenge, ARC-Easy, HellaSwag, SIQA, PIQA with eval/zeroshot.py's prompts), trained
# on their train splits and scored on each (val_acc_by_task). python finetune.py configs/finetune_roberta_commonsense.py
include("llr.py")
hf_model = "roberta-base"
head = "choice"
task = "commonsense"
max_length = 128
epochs = 1                     # about 138k training questions: 8.6k updates of 16
batch_size = 16
learning_rate = 1e-5           # LLR's peaks reach 5 x this
out_dir = "out/finetune_roberta_commonsense_llr"
