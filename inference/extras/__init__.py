"""A1111's "Extras" tab, its upscale: `python -m inference.extras image=… upscaler=… scale=…`."""
