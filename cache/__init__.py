"""superpie.cache."""
