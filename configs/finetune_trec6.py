# Fine-tuning: DistilBERT on TREC-6 (question type, 6 coarse classes; 5,452 train / 500 test rows), the fine-tuning
# task of "Learning Rate Engineering". python finetune.py configs/finetune_trec6.py [configs/<method>.py] [--from_scratch]
hf_model = "distilbert-base-uncased"
task = "trec6"
max_length = 64                # questions are short: 64 tokens keep all but a handful whole
epochs = 3
batch_size = 16
learning_rate = 5e-5
out_dir = "out/finetune_trec6"
