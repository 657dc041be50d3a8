# LLaMA-60M with schedule-free AdamW: the size file, then the method file.
include("llama_60m.py", "schedule_free.py")
