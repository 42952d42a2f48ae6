"""superpie.completion.decoding."""
