"""superpie.completion."""
