"""The repository formats code models were trained on, detected from a tokenizer's special tokens.

- Qwen2.5-Coder: `<|repo_name|>name\n<|file_sep|>path\ncode\n<|file_sep|>path\ncode ...`; the current
  file comes last with its own `<|file_sep|>path\n` header, then its text (or its FIM layout);
- StarCoder2 (and SmolLM2's vocabulary): `<repo_name>name<file_sep>path\ncode ...` the same way;
- any other tokenizer: plain text, each file under a `# path` comment line (a model that never saw
  repository tokens still reads a comment naming the file).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer


@dataclass(frozen=True)
class RepoFormat:
    """How one tokenizer spells a repository: its marker ids (None: plain text headers)."""

    name: str  # "qwen", "starcoder" or "plain"
    repo_name: int | None = None
    file_sep: int | None = None
    repo_newline: bool = True  # a newline after the repository name (Qwen), or none (StarCoder2)

    def repo(self, tokenizer: Tokenizer, name: str) -> list[int]:
        """The ids that open the repository (nothing in plain text)."""
        if self.repo_name is None:
            return []
        return [self.repo_name, *_encode(tokenizer, name + ("\n" if self.repo_newline else ""))]

    def header(self, tokenizer: Tokenizer, path: str) -> list[int]:
        """The ids that open one file."""
        if self.file_sep is None:
            return _encode(tokenizer, f"# {path}\n")
        return [self.file_sep, *_encode(tokenizer, f"{path}\n")]

    def snippet(self, tokenizer: Tokenizer, path: str, code: str) -> list[int]:
        """One file's snippet: its header and its code, ending with a newline (a blank line in plain text)."""
        code = code if code.endswith("\n") else code + "\n"
        return self.header(tokenizer, path) + _encode(tokenizer, code if self.file_sep is not None else code + "\n")


def _encode(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False).ids)


PLAIN = RepoFormat("plain")


def detect_repo_format(tokenizer: Tokenizer) -> RepoFormat:
    """The first format whose markers are single tokens of `tokenizer`; plain text when none is."""
    for name, repo, sep, newline in (
        ("qwen", "<|repo_name|>", "<|file_sep|>", True),
        ("starcoder", "<repo_name>", "<file_sep>", False),
    ):
        repo_id, sep_id = tokenizer.token_to_id(repo), tokenizer.token_to_id(sep)
        if repo_id is not None and sep_id is not None:
            return RepoFormat(name, int(repo_id), int(sep_id), newline)
    return PLAIN
