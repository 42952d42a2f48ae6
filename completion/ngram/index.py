"""Workspace token n-gram model, used to filter the k×V candidates of superposed decoding.

Shen et al. (2024) keep superposed drafts on track by mixing the LM's log-probs with an n-gram
model's. Here the n-grams come from the workspace itself (files on disk and open editor buffers),
tokenized with the model's own tokenizer, so the filter knows the project's identifiers and idioms.

Smoothing: interpolated Witten-Bell, recursively down to a uniform distribution over the vocabulary:

    P(w | h) = (c(h w) + T(h) * P(w | h')) / (c(h) + T(h))      (h' = h without its oldest token)
    P(w | ()) = (c(w) + T(()) / V) / (N + T(()))               (N tokens, T distinct tokens)

where c(h) is the number of tokens seen after h and T(h) the number of distinct ones; a context
never seen contributes nothing (P(w | h) = P(w | h')). Why Witten-Bell rather than Kneser-Ney: it
needs only the counts c(h w) (T and c(h) are read off them), so subtracting one file and adding it
back leaves the model exactly as a rebuild would, and pruning rare n-grams keeps it a proper
distribution; Kneser-Ney's continuation counts are global and go wrong under both. It also behaves
well on the small, sparse counts of one workspace. P sums to 1 over the V token ids.

Memory is bounded: files over `max_file_bytes` and files past `max_files` are skipped, and once the
number of distinct n-grams of order >= 2 passes `max_ngrams`, the rarest highest-order ones are
dropped (the counts are then approximate; without pruning, incremental updates equal a rebuild).
Per file the index keeps only its token ids (4 bytes a token); its n-grams are recounted from them
when it changes, and only in the window around the edited tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import numpy as np
import platformdirs
import torch

from superpie.completion.config import NgramConfig

log = logging.getLogger(__name__)

Encode = Callable[[str], list[int]]

_FORMAT = 1
_MAX_VIEWS = 65_536  # cached per-context lookup tables; cleared wholesale past this
_FROM_BUFFER = -1  # mtime of an entry that came from an editor buffer, not from the disk



@dataclass
class _FileEntry:
    tokens: np.ndarray  # [T] int32
    mtime_ns: int
    size: int


@dataclass(frozen=True)
class _View:
    """The continuations of one context as sorted arrays, so many candidates are looked up at once."""

    ids: torch.Tensor  # [K] int64, sorted
    counts: torch.Tensor  # [K] float64
    total: float  # c(h)
    types: float  # T(h)

    @classmethod
    def of(cls, nxt: dict[int, int]) -> _View:
        ids = sorted(nxt)
        counts = [nxt[i] for i in ids]
        return cls(torch.tensor(ids), torch.tensor(counts, dtype=torch.float64), float(sum(counts)), len(ids))

    def lookup(self, cand: torch.Tensor) -> torch.Tensor:
        idx = torch.searchsorted(self.ids, cand).clamp_(max=self.ids.numel() - 1)
        return torch.where(self.ids[idx] == cand, self.counts[idx], 0.0)


def _ngram_counts(tokens: list[int], order: int) -> Counter[tuple[int, ...]]:
    counts: Counter[tuple[int, ...]] = Counter()
    for n in range(2, order + 1):
        counts.update(zip(*(tokens[i:] for i in range(n)), strict=False))
    return counts


def _uri_key(uri: str) -> str:
    if uri.startswith("file:"):
        return str(Path(url2pathname(unquote(urlparse(uri).path))).resolve())
    return uri


def default_cache_dir() -> Path:
    """Where n-gram indexes persist between runs, so a restart does not re-tokenize the workspace."""
    return Path(platformdirs.user_cache_dir("superpie")) / "ngram"


class NgramIndex:
    """Token n-gram counts of a workspace, updated per file, queried for many candidates at once."""

    def __init__(
        self,
        workspace_dir: str | os.PathLike[str],
        encode: Encode,
        *,
        vocab_size: int,
        tokenizer_id: str,
        config: NgramConfig = NgramConfig(),
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if config.order < 1 or vocab_size < 1:
            raise ValueError(f"n-gram order and vocab_size must be >= 1 (got {config.order}, {vocab_size})")
        self.workspace = Path(workspace_dir).resolve()
        self.encode = encode
        self.vocab_size = vocab_size
        self.tokenizer_id = tokenizer_id
        self.config = config
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._lock = threading.RLock()
        self._loaded = not config.persist
        self._reset()

    @classmethod
    def build(
        cls,
        workspace_dir: str | os.PathLike[str],
        encode: Encode,
        *,
        vocab_size: int,
        tokenizer_id: str,
        config: NgramConfig = NgramConfig(),
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> NgramIndex:
        """Index a workspace's *.py files, reusing the persisted index for files that did not change."""
        index = cls(
            workspace_dir, encode, vocab_size=vocab_size, tokenizer_id=tokenizer_id, config=config,
            cache_dir=cache_dir,
        )  # fmt: skip
        index.refresh()
        if config.persist:
            index.save()
        return index

    def _reset(self) -> None:
        self._uni = torch.zeros(self.vocab_size, dtype=torch.float64)  # [V] unigram counts
        self._uni_total = 0.0
        self._uni_types: float | None = None  # recomputed lazily after a change
        self._next: dict[tuple[int, ...], dict[int, int]] = {}  # context (1..order-1 ids) -> next id -> count
        self._size = 0  # distinct n-grams of order >= 2
        self._views: dict[tuple[int, ...], _View | None] = {}
        self._files: dict[str, _FileEntry] = {}
        self._open: set[str] = set()

    # ---- queries -------------------------------------------------------------------------------

    def logprobs(self, context: Sequence[int], candidates: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Log P(candidate | last order-1 context ids) for many candidates: the decoder's n-gram term."""
        self._ensure_loaded()
        cand = torch.as_tensor(candidates, dtype=torch.long)
        flat = cand.reshape(-1)
        m = self.config.order - 1
        tail = context[-m:] if m > 0 else []
        tail = tail.tolist() if isinstance(tail, torch.Tensor) else list(tail)
        with self._lock:
            p = self._unigram_probs(flat)
            for k in range(1, len(tail) + 1):
                view = self._view(tuple(tail[-k:]))
                if view is None:  # a longer context ending in an unseen one is unseen too
                    break
                p = (view.lookup(flat) + view.types * p) / (view.total + view.types)
        return p.log().to(torch.float32).reshape(cand.shape)

    def logprobs_batch(self, contexts: Sequence[Sequence[int]], candidates: torch.Tensor) -> torch.Tensor:
        """Per-draft n-gram log-probs: row i scores candidates[i] after contexts[i]; [k, m] -> [k, m]."""
        assert candidates.dim() == 2 and candidates.shape[0] == len(contexts)
        return torch.stack([self.logprobs(c, row) for c, row in zip(contexts, candidates, strict=True)])

    def _unigram_probs(self, cand: torch.Tensor) -> torch.Tensor:
        v = self.vocab_size
        if self._uni_total == 0:
            return torch.full(cand.shape, 1.0 / v, dtype=torch.float64)
        if self._uni_types is None:
            self._uni_types = float(torch.count_nonzero(self._uni))
        inside = (cand >= 0) & (cand < v)  # ids past the tokenizer (padded embeddings) were never seen
        counts = torch.where(inside, self._uni[cand.clamp(0, v - 1)], 0.0)
        return (counts + self._uni_types / v) / (self._uni_total + self._uni_types)

    def _view(self, ctx: tuple[int, ...]) -> _View | None:
        try:
            return self._views[ctx]
        except KeyError:
            pass
        nxt = self._next.get(ctx)
        view = None if nxt is None else _View.of(nxt)
        if len(self._views) >= _MAX_VIEWS:
            self._views.clear()
        self._views[ctx] = view
        return view

    def counts(self) -> dict[tuple[int, ...], int]:
        """Every n-gram (orders 1..N) with its count, so tests and diagnostics can compare indexes."""
        self._ensure_loaded()
        with self._lock:
            out = {(int(i),): int(self._uni[i]) for i in torch.nonzero(self._uni).flatten().tolist()}
            for ctx, nxt in self._next.items():
                out.update({ctx + (w,): c for w, c in nxt.items()})
        return out

    @property
    def num_ngrams(self) -> int:
        """Distinct n-grams of order >= 2: the quantity that `max_ngrams` bounds."""
        self._ensure_loaded()
        return self._size

    @property
    def files(self) -> list[str]:
        """Keys (resolved paths, or URIs of unsaved buffers) of everything counted."""
        self._ensure_loaded()
        return sorted(self._files)

    # ---- updates -------------------------------------------------------------------------------

    def refresh(self) -> int:
        """Bring the index in line with the disk; only files whose mtime or size changed are re-read."""
        self._ensure_loaded()
        seen: set[str] = set()
        changed = 0
        for path, st in self._walk():
            key = str(path)
            seen.add(key)
            entry = self._files.get(key)
            if key in self._open or (entry and (entry.mtime_ns, entry.size) == (st.st_mtime_ns, st.st_size)):
                continue
            text = self._read(path)
            if text is not None:
                self._set(key, self.encode(text), st.st_mtime_ns, st.st_size)
                changed += 1
        with self._lock:
            for key in [k for k in self._files if k not in seen and k not in self._open]:
                self._remove(key)
                changed += 1
        return changed

    def update_file(self, path: str | os.PathLike[str], text: str | None = None) -> bool:
        """Recount one file after it changed on disk (the watcher's hook); False when skipped."""
        self._ensure_loaded()
        p = Path(path).resolve()
        key = str(p)
        if key in self._open:  # the editor's buffer is newer than the disk
            return False
        try:
            st = p.stat()
            mtime, size = st.st_mtime_ns, st.st_size
        except OSError:
            mtime, size = _FROM_BUFFER, -1
        if text is None:
            text = self._read(p)
            if text is None:
                return self.remove_file(p)
        if len(text.encode("utf-8", "replace")) > self.config.max_file_bytes or (
            key not in self._files and len(self._files) >= self.config.max_files
        ):
            self.remove_file(p)
            return False
        self._set(key, self.encode(text), mtime, size)
        return True

    def remove_file(self, path: str | os.PathLike[str]) -> bool:
        """Forget a deleted file's n-grams; False when it was not counted."""
        self._ensure_loaded()
        with self._lock:
            return self._remove(str(Path(path).resolve()))

    def update_document(self, uri: str, text: str) -> None:
        """Count an open editor buffer instead of its file on disk (unsaved edits included)."""
        self._ensure_loaded()
        key = _uri_key(uri)
        tokens = self.encode(text)
        with self._lock:
            self._open.add(key)
            self._set(key, tokens, _FROM_BUFFER, len(text))

    def close_document(self, uri: str) -> None:
        """Go back to the file on disk (or forget an unsaved buffer) when the editor closes it."""
        self._ensure_loaded()
        key = _uri_key(uri)
        with self._lock:
            self._open.discard(key)
        if Path(key).is_file():
            self.update_file(key)
        else:
            with self._lock:
                self._remove(key)

    def _set(self, key: str, tokens: Sequence[int], mtime_ns: int, size: int) -> None:
        new = list(tokens)
        if new and (min(new) < 0 or max(new) >= self.vocab_size):
            raise ValueError(f"token ids of {key} fall outside the vocabulary of {self.vocab_size}")
        with self._lock:
            entry = self._files.get(key)
            if entry is None:
                self._apply(new, +1)
            else:
                self._replace(entry.tokens.tolist(), new)
            self._files[key] = _FileEntry(np.asarray(new, dtype=np.int32), mtime_ns, size)
            self._maybe_prune()

    def _remove(self, key: str) -> bool:
        entry = self._files.pop(key, None)
        if entry is None:
            return False
        self._apply(entry.tokens.tolist(), -1)
        return True

    def _replace(self, old: list[int], new: list[int]) -> None:
        """Recount only the window that differs: n-grams wholly inside the common prefix/suffix cancel."""
        limit = min(len(old), len(new))
        p = 0
        while p < limit and old[p] == new[p]:
            p += 1
        s = 0
        while s < limit - p and old[-1 - s] == new[-1 - s]:
            s += 1
        m = self.config.order - 1
        lo = max(0, p - m)
        self._apply(old[lo : min(len(old), len(old) - s + m)], -1)
        self._apply(new[lo : min(len(new), len(new) - s + m)], +1)

    def _apply(self, tokens: list[int], sign: int) -> None:
        if not tokens:
            return
        ids = torch.tensor(tokens, dtype=torch.long)
        self._uni.index_add_(0, ids, torch.full(ids.shape, float(sign), dtype=torch.float64))
        self._uni_total += sign * len(tokens)
        self._uni_types = None
        for gram, c in _ngram_counts(tokens, self.config.order).items():
            ctx, w = gram[:-1], gram[-1]
            nxt = self._next.get(ctx)
            if sign > 0:
                if nxt is None:
                    nxt = self._next[ctx] = {}
                old = nxt.get(w, 0)
                self._size += old == 0
                nxt[w] = old + c
            elif nxt is not None and w in nxt:  # absent when pruned
                left = nxt[w] - c
                if left > 0:
                    nxt[w] = left
                else:
                    del nxt[w]
                    self._size -= 1
                    if not nxt:
                        del self._next[ctx]
            self._views.pop(ctx, None)

    def _maybe_prune(self) -> None:
        """Past the cap, drop n-grams seen <= t times, highest order first, t = 1, 2, ... down to 90%."""
        if self._size <= self.config.max_ngrams:
            return
        target = int(self.config.max_ngrams * 0.9)
        t = 1
        while True:
            for n in range(self.config.order, 1, -1):
                for ctx in [c for c in self._next if len(c) == n - 1]:
                    nxt = self._next[ctx]
                    for w in [w for w, c in nxt.items() if c <= t]:
                        del nxt[w]
                        self._size -= 1
                    if not nxt:
                        del self._next[ctx]
                    self._views.pop(ctx, None)
                    if self._size <= target:
                        return
            t += 1

    # ---- workspace walk ------------------------------------------------------------------------

    def _walk(self) -> Iterator[tuple[Path, os.stat_result]]:
        found = 0
        for root, dirs, names in os.walk(self.workspace):
            dirs[:] = sorted(d for d in dirs if not self._ignored_dir(Path(root) / d))
            for name in sorted(names):
                if not name.endswith(".py"):
                    continue
                path = Path(root) / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                if st.st_size > self.config.max_file_bytes:
                    continue
                yield path, st
                found += 1
                if found >= self.config.max_files:
                    return

    def _ignored_dir(self, path: Path) -> bool:
        name = path.name
        return (
            name in self.config.ignored_dirs
            or name.endswith(".egg-info")
            or (path / "pyvenv.cfg").exists()  # a virtual environment under any name
        )

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            log.debug("n-gram index skips %s: %s", path, exc)
            return None

    # ---- persistence ---------------------------------------------------------------------------

    @property
    def cache_path(self) -> Path:
        """The cache file of this workspace and tokenizer (the key keeps other setups from sharing it)."""
        parts = [str(self.workspace), self.tokenizer_id, str(self.config.order), str(self.vocab_size)]
        key = "\0".join(parts)
        return self.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"

    def _meta(self) -> dict[str, object]:
        return {
            "format": _FORMAT, "workspace": str(self.workspace), "tokenizer_id": self.tokenizer_id,
            "order": self.config.order, "vocab_size": self.vocab_size,
        }  # fmt: skip

    def save(self) -> Path:
        """Write the index atomically to its cache file, so the next run skips tokenizing the workspace."""
        self._ensure_loaded()
        with self._lock:
            keys = sorted(self._files)
            entries = [self._files[k] for k in keys]
            arrays: dict[str, np.ndarray] = {
                "meta": np.array(json.dumps(self._meta())),
                "unigrams": self._uni.numpy().astype(np.int64),
                "file_keys": np.array(keys, dtype=str),
                "file_mtime": np.array([e.mtime_ns for e in entries], dtype=np.int64),
                "file_size": np.array([e.size for e in entries], dtype=np.int64),
                "file_offsets": np.cumsum([0] + [len(e.tokens) for e in entries], dtype=np.int64),
                "file_tokens": np.concatenate([e.tokens for e in entries] or [np.zeros(0, np.int32)]),
            }
            for n in range(2, self.config.order + 1):
                rows = [ctx + (w,) for ctx, nxt in self._next.items() if len(ctx) == n - 1 for w in nxt]
                arrays[f"grams{n}"] = np.array(rows, dtype=np.int32).reshape(-1, n)
                arrays[f"counts{n}"] = np.array([self._next[r[:-1]][r[-1]] for r in rows], dtype=np.int64)
        path = self.cache_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
        return path

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            path = self.cache_path
            if not path.exists():
                return
            try:
                self._load(path)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignoring unreadable n-gram cache %s: %s", path, exc)
                self._reset()

    def _load(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["meta"])) != self._meta():
                return
            self._uni = torch.from_numpy(z["unigrams"].astype(np.float64))
            self._uni_total = float(self._uni.sum())
            offsets = z["file_offsets"].tolist()
            tokens = z["file_tokens"]
            keys, mtimes, sizes = z["file_keys"].tolist(), z["file_mtime"].tolist(), z["file_size"].tolist()
            for i, key in enumerate(keys):
                self._files[key] = _FileEntry(tokens[offsets[i] : offsets[i + 1]].copy(), mtimes[i], sizes[i])
            for n in range(2, self.config.order + 1):
                for row, c in zip(z[f"grams{n}"].tolist(), z[f"counts{n}"].tolist(), strict=True):
                    self._next.setdefault(tuple(row[:-1]), {})[row[-1]] = c
                    self._size += 1
