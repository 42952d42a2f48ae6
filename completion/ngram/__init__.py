"""superpie.completion.ngram."""
