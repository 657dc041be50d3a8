# LLaMA-135M with schedule-free AdamW: the size file, then the method file.
include("llama_135m.py", "schedule_free.py")
