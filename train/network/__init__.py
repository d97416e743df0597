"""Trainable networks (LoRA) injected into the base model, and their kohya/A1111 file format."""
