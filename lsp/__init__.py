"""superpie.lsp."""
