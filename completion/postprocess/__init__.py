"""superpie.completion.postprocess."""
