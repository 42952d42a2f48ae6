"""superpie.analysis."""
