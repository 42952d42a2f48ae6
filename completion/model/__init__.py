"""superpie.completion.model."""
