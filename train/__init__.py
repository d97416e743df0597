"""LoraSmith stage 2: train LoRA / DreamBooth networks on Stable Diffusion. Entry point: `python -m train`."""
