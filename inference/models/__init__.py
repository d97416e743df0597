"""Base models: load from a diffusers folder or hub id, or build the tiny / SD 1.5-architecture ones."""
