"""ayar: governed LLM fine-tuning, from raw enterprise data to a served, documented model."""

__version__ = "0.1.0"
