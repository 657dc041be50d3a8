# GPT-2 124M with LLR on AdamW: the size file, then the method file.
include("gpt_nano.py", "llr.py")
