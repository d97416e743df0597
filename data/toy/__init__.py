"""The toy world: procedural pictures with captions, held-out concepts, and an analytic scorer."""
