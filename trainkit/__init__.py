"""trainkit: LoRA fine-tuning you launch with one command and stop worrying about."""

__version__ = "0.1.0"
