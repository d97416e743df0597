"""The toy world: small procedural images with captions, for tests and training without downloads."""

from data.toy.simple_concept import write_toy_concept_dataset

__all__ = ["write_toy_concept_dataset"]
