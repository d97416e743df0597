"""Building the bundled toy base model (`models/toy`) from scratch: `python scripts/build_toy.py`."""
