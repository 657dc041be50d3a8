# Fine-tuning: DistilBERT on GLUE RTE (entailment of sentence pairs; 2,490 train / 277 validation rows), a fine-tuning
# task of "Learning Rate Engineering". python finetune.py configs/finetune_rte.py [configs/<method>.py] [--from_scratch]
hf_model = "distilbert-base-uncased"
task = "rte"
max_length = 128
epochs = 3
batch_size = 16
learning_rate = 5e-5
out_dir = "out/finetune_rte"
