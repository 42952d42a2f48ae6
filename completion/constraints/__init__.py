"""superpie.completion.constraints."""
