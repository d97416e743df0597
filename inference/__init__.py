"""LoraSmith's bundled inference engine: prompts, text encoding, LoRA application, samplers, grids."""
