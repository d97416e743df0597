"""LoraSmith stage 1: image checks, the kohya `N_token class` folder convention, datasets. `python -m data`."""
