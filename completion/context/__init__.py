"""Repository context: snippets of other workspace files placed ahead of the document in its cache.

`format.py` spells snippets in the model's repository format (detected from the tokenizer's special
tokens), `activity.py` remembers recently edited and visited regions, `select.py` chooses and orders
snippets under a token budget, and `builder.py` (`RepositoryContext`) puts it together for the engine,
with the definitions of the names near the cursor from `analysis/definitions.py`. The cache places the
ids (cache/context.py) and PIE follows their changes.
"""
