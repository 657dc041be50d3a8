# Fine-tuning: DistilBERT on IMDb (review sentiment; 25,000 train / 25,000 test rows), a fine-tuning task of
# "Learning Rate Engineering". Reviews are truncated to 256 tokens (many are longer; 512 is the model's limit).
# python finetune.py configs/finetune_imdb.py [configs/<method>.py] [--from_scratch]
hf_model = "distilbert-base-uncased"
task = "imdb"
max_length = 256
epochs = 2
batch_size = 16
learning_rate = 5e-5
out_dir = "out/finetune_imdb"
