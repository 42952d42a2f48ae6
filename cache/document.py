"""`DocumentCache`: the token ids and KV of one document, kept in step with its text.

`sync(new_text)` tokenizes, diffs the ids against what is cached, and applies the hunks in one of
three modes:

- `pie` (He et al., 2024): keep the KV before the first hunk; move every kept token behind a hunk to
  its new index and rotate its key by its position delta; then encode each hunk's new tokens at their
  new positions, attending to everything before them. Cost ~ edited tokens, not document length.
  The first `exact_after` (16) tokens behind each hunk are re-encoded too: they are the ones the edit
  disturbs most, and re-encoding them brings top-1 agreement with a full recompute measurably closer
  for a few tokens more per hunk (benchmarks/RESULTS.md).
- `exact`: keep the KV before the first hunk and re-encode everything after it.
- `full`: re-encode everything (the reference the other two are measured against).

PIE leaves the tokens behind an edit with stale context (their KV never saw the new text). Each edit
adds the number of tokens it left stale to a running count (a token staled by two edits counts twice:
its error grows with every edit it did not see); once the count passes `stale_threshold`, or when
`refresh()` is called in idle time, the stale tokens are re-encoded exactly and the count restarts,
so the error never accumulates without bound.

Documents longer than `max_tokens` are cached through a window: `max_tokens` tokens starting at a
multiple of `window_step` chosen so that the anchor (the cursor) is inside it. Positions count from
the window start. The start moves in steps, so typing does not slide the window on every keystroke;
when it moves, PIE sees a deletion at the start and rotates everything behind it.

Repository context (`sync(..., context=ids)`, cache/context.py) is cached ahead of the document; a
changed snippet is a hunk like any other, so PIE encodes it and rotates the document behind it.

A newly opened long document may be encoded window-first (`defer`, then `open_step` in idle time,
cache/opening.py): the tokens the opening has not reached are left out of the cached sequence, and
every cached token behind them is counted stale until they are in and it is re-encoded exactly.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from typing import Any

import torch
from tokenizers import Tokenizer

from superpie.cache.context import with_context
from superpie.cache.defaults import OPEN_CHUNK, OPEN_WINDOW, STALE_THRESHOLD, WINDOW_STEP
from superpie.cache.diff import Hunk, common_prefix, common_suffix, diff_ids
from superpie.cache.fim import FimMarkers, fim_sequence
from superpie.cache.forward import HFRunner, Runner, encode_pieces, encode_span
from superpie.cache.kv import KVStore
from superpie.cache.opening import Offsets, Opening
from superpie.cache.rope import RopeSpec, Rotation
from superpie.cache.stats import NO_SYNC, CursorSplit, SyncStats

MODES = ("pie", "exact", "full")


class DocumentCache:
    """Token ids + per-layer KV of one document (or its window), updated by PIE, exact or full sync."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        rope: RopeSpec,
        mode: str = "pie",
        stale_threshold: int = STALE_THRESHOLD,
        max_tokens: int = 8192,
        window_step: int = WINDOW_STEP,
        chunk: int = 512,
        exact_after: int = 16,
        runner: Runner | None = None,
        fim: FimMarkers | None = None,
        fim_suffix_tokens: int = 1024,
        open_window: int = OPEN_WINDOW,
        open_chunk: int = OPEN_CHUNK,
    ) -> None:
        """`runner` runs the model (the loader's fast runner); None runs `model`'s own HF forward.
        `fim`: cache the fill-in-the-middle layout around the cursor (cache/fim.py) instead of the text.
        `open_window`, `open_chunk`: a document `defer`red on opening (cache/opening.py)."""
        if mode not in MODES:
            raise ValueError(f"unknown cache mode '{mode}' (expected one of {', '.join(MODES)})")
        self.model = model
        self.runner: Runner = runner if runner is not None else HFRunner(model)
        self.tokenizer = tokenizer
        self.rope = rope
        self.mode = mode
        self.stale_threshold = stale_threshold
        self.max_tokens = max_tokens
        self.window_step = window_step
        self.chunk = chunk
        self.exact_after = exact_after  # pie: tokens behind each hunk re-encoded exactly
        self.dtype = self.runner.kv_dtype  # of the KV and of the masks
        hf: Any = model  # an HF model: its config is not in nn.Module's type
        self.store = KVStore(hf.config.num_hidden_layers)
        self.text = ""
        self.ids: list[int] = []  # cached ids (the window)
        self.offsets: list[tuple[int, int]] = []  # char spans of the cached ids in `text`
        self.window_start = 0  # index of ids[0] in the whole document's tokens
        self.stale: list[bool] = []  # per cached token: its KV predates an edit before it
        self.stale_load = 0  # stale tokens summed over the edits since the last exact refresh
        self.fim = fim
        self.fim_suffix_tokens = fim_suffix_tokens
        self.cursor = 0  # FIM: the char offset the layout is cut at
        self.middle_from = 0  # FIM: where the middle begun after the middle marker starts (cache/fim.py)
        self.context: list[int] = []  # repository context ids cached ahead of the document (cache/context.py)
        self.open_window, self.open_chunk = open_window, open_chunk
        self.opening: Opening | None = None  # a window-first opening not finished yet (cache/opening.py)
        self.open_cut: int | None = None  # opening: index in `ids` where its first left-out token belongs

    # ----------------------------------------------------------------- public

    @property
    def length(self) -> int:
        """Tokens with valid KV."""
        return len(self.ids)

    @property
    def stale_count(self) -> int:
        """Tokens whose KV has not seen an edit that happened before them."""
        return sum(self.stale)

    def nbytes(self) -> int:
        """Memory the KV buffers hold."""
        return self.store.nbytes()

    @torch.inference_mode()
    def clone(self) -> DocumentCache:
        """An independent copy (ids, KV, staleness): lets benchmarks apply one edit several ways."""
        twin = DocumentCache(
            self.model, self.tokenizer, self.rope, self.mode, self.stale_threshold,
            self.max_tokens, self.window_step, self.chunk, self.exact_after, self.runner,
            self.fim, self.fim_suffix_tokens, self.open_window, self.open_chunk,
        )
        twin.cursor, twin.middle_from, twin.context = self.cursor, self.middle_from, list(self.context)
        twin.open_cut = self.open_cut
        twin.opening = None if self.opening is None else self.opening.copy()
        twin.text, twin.ids, twin.offsets = self.text, list(self.ids), list(self.offsets)
        twin.window_start, twin.stale, twin.stale_load = self.window_start, list(self.stale), self.stale_load
        twin.store.keys = [None if k is None else k.clone() for k in self.store.keys]
        twin.store.values = [None if v is None else v.clone() for v in self.store.values]
        return twin

    def release(self) -> None:
        """Free the KV (eviction); the next sync re-encodes from scratch."""
        self.store.release()
        self.text, self.ids, self.offsets, self.stale = "", [], [], []
        self.stale_load = 0
        self.window_start = 0
        self.cursor = self.middle_from = 0
        self.opening, self.open_cut = None, None

    @torch.inference_mode()
    def sync(
        self, text: str, anchor: int | None = None, mode: str | None = None, context: Sequence[int] | None = None
    ) -> SyncStats:
        """Bring the KV in step with `text` (anchor: a char offset the window must contain); `context`: the
        repository context ids to cache ahead of the document (None: keep the current ones)."""
        return self._sync(text, anchor, mode, context, named=anchor is not None)

    def _sync(
        self, text: str, anchor: int | None, mode: str | None, context: Sequence[int] | None, named: bool
    ) -> SyncStats:
        """`sync`; `named`: the anchor is a request's cursor (an opening encodes the window before it now)."""
        t0 = time.perf_counter()
        mode = mode or self.mode
        if mode not in MODES:
            raise ValueError(f"unknown cache mode '{mode}' (expected one of {', '.join(MODES)})")
        ctx = self.context if context is None else list(context)
        same = ctx == self.context and self.opening is None
        cursor = anchor if named else None
        if self.fim is not None:  # the cursor is the anchor; a sync without one puts it where the edit ended
            anchor = self._edit_end(text) if anchor is None else anchor
            if text == self.text and self.ids and anchor == self.cursor and same:
                return NO_SYNC
        elif text == self.text and self.ids and self._window_holds(anchor) and same:
            return NO_SYNC
        ids, offsets = self._layout(text, anchor)
        cut = None
        if self.opening is not None:  # leave out what it has not encoded yet
            ids, offsets, cut = self.opening.leave_out(self.text, text, cursor, ids, offsets)
        head = offsets[0][0] if offsets else 0
        ids, offsets = with_context(ctx, ids, offsets, head)
        stats = self._apply(ids, mode)
        self.open_cut = None if cut is None else cut + len(ctx)
        self._mark_unseen()
        refreshed = self._refresh_if_stale()
        self.text, self.offsets, self.context = text, offsets, ctx
        ms = (time.perf_counter() - t0) * 1000
        return SyncStats(stats.mode, stats.reused, stats.encoded, stats.rotated, refreshed, stats.hunks, ms)

    @torch.inference_mode()
    def refresh(self, limit: int | None = None) -> int:
        """Re-encode the stale tokens exactly now, from the first one on; return how many tokens were encoded
        (0: none was stale). While an opening leaves tokens out, only the stale ones before them (those behind
        stay stale until they are in).

        `limit`: encode at most this many (idle time takes the work in steps, so a request that comes in
        waits for one step, not for every stale token of a long document); the rest stay stale, and the
        running stale count keeps what they still owe.
        """
        first = self._first_stale()
        end = len(self.ids) if self.open_cut is None else self.open_cut
        if first is None or first >= end:
            self.stale_load = 0
            return 0
        stop = end if limit is None else min(end, first + max(1, limit))
        self._refresh_span(first, stop)
        left = self._first_stale()
        self.stale_load = 0 if left is None or left >= end else max(0, self.stale_load - (stop - first))
        return stop - first

    def refreshable_stale(self, n: int) -> int:
        """Stale tokens among the first `n` (what a view of `n` tokens reads), when `refresh_before(n)` can make
        all of them exact now; 0 when none is stale, or while an opening still leaves tokens out (those behind
        it stay stale until they are in)."""
        if self.opening is not None:
            return 0
        return sum(self.stale[:n])

    @torch.inference_mode()
    def refresh_before(self, n: int) -> int:
        """Re-encode the stale tokens among the first `n` exactly now (those behind stay stale); how many tokens
        were encoded. A request does this when decoding over stale KV met a close call (completion/engine.py)."""
        first = self._first_stale()
        if first is None or first >= n:
            return 0
        return self.refresh(limit=n - first)

    def defer(self, text: str) -> bool:
        """Before the first sync of a document whose cache an idle worker will finish with `open_step`: a text
        of more than `open_window` tokens is opened window-first (cache/opening.py). Whether it is."""
        if self.ids or self.text or self.open_window <= 0 or self.mode != "pie" or not self.rope.shiftable:
            return False
        if len(self.tokenizer.encode(text, add_special_tokens=False).ids) <= self.open_window:
            return False
        after = self.open_window // 4 if self.fim is not None else 0  # the FIM layout reads the suffix too
        self.opening = Opening.deferred(text, self.open_window, after)
        return True

    @torch.inference_mode()
    def open_step(self) -> bool:
        """Idle time during an opening: re-encode up to `open_chunk` stale tokens that nothing left out precedes,
        else bring in the next `open_chunk` left-out tokens. False when nothing was left: the cache now equals
        an exact encode, and the opening is over."""
        opening = self.opening
        if opening is None:
            return False
        first = self._first_stale()
        end = len(self.ids) if self.open_cut is None else self.open_cut
        if first is not None and first < end:
            self._refresh_span(first, min(end, first + self.open_chunk))
            return True
        if not opening.gaps:
            self.opening, self.stale_load = None, 0
            return False
        anchor = self.cursor if self.fim is not None else opening.anchor  # (FIM: the cut stays where it is)
        opening.advance(self._layout(self.text, anchor)[1], self.open_chunk)
        self._sync(self.text, anchor, None, None, named=False)
        return True

    def split_at(self, offset: int, heal: bool = True) -> CursorSplit:
        """Split the cached tokens at char `offset` of the synced text, backing up for token healing.

        A cursor inside a token backs up to the token's start. With `heal`, a cursor on a token
        boundary also backs up one token: the text before a cursor usually ends at a boundary the
        tokenizer would not have made had the line been complete (a lone "\n" where the file has
        "\n" + indentation as one token, "(" where it has "()"), and the model predicts best from
        the boundary it saw in training. The backed-up characters become `typed`, which decoding
        must spell first.
        """
        if not 0 <= offset <= len(self.text):
            raise ValueError(f"offset {offset} is outside the document (length {len(self.text)})")
        if self.fim is not None:  # decoding continues after the middle begun, which sees everything
            if offset != self.cursor:
                raise ValueError(f"the FIM layout is cut at {self.cursor}, not at {offset}: sync with anchor={offset}")
            n, (start, end) = len(self.ids), self.offsets[-1] if self.offsets else (0, 0)
            if heal and self.middle_from <= start < end == offset:  # heal the middle's last token, as above
                return CursorSplit(prefix_len=n - 1, typed=self.text[start:offset])
            return CursorSplit(prefix_len=n, typed="")
        n = bisect.bisect_right([end for _, end in self.offsets], offset)
        if heal and n > len(self.context) and self.offsets[n - 1][1] == offset:
            n -= 1  # (never back into the repository context: it is no text of the document)
        boundary = self.offsets[n - 1][1] if n > 0 else self._window_char_start()
        return CursorSplit(prefix_len=n, typed=self.text[boundary:offset])

    # ---------------------------------------------------------------- window

    def _edit_end(self, text: str) -> int:
        """Where the cursor is after typing `text` over the synced text: the end of the changed span
        (the end of the document for a first sync; the old cursor if nothing changed)."""
        if not self.ids:
            return len(text)
        if text == self.text:
            return self.cursor
        head = common_prefix(self.text, text)
        return len(text) - common_suffix(self.text, text, floor=head)

    def _layout(self, text: str, anchor: int | None) -> tuple[list[int], Offsets]:
        """The sequence to cache for `text` (FIM: cut at `anchor`; else the window holding it), gaps included."""
        if self.fim is not None:
            return self._fim_layout(self.fim, text, len(text) if anchor is None else anchor)
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        return self._window(list(enc.ids), list(enc.offsets), anchor)

    def _fim_layout(self, markers: FimMarkers, text: str, cursor: int) -> tuple[list[int], list[tuple[int, int]]]:
        seq = fim_sequence(
            self.tokenizer, markers, text, cursor, self.max_tokens, self.fim_suffix_tokens, self.window_step
        )
        self.window_start, self.cursor, self.middle_from = seq.prefix_start, cursor, seq.middle_from
        return seq.ids, seq.offsets

    def _window_char_start(self) -> int:
        return self.offsets[0][0] if self.offsets else 0

    def _window_holds(self, anchor: int | None) -> bool:
        if anchor is None or self.window_start == 0 and len(self.ids) - len(self.context) < self.max_tokens:
            return True
        if not self.offsets:
            return False
        return self.offsets[0][0] <= anchor <= self.offsets[-1][1]

    def _window(
        self, ids: list[int], offsets: list[tuple[int, int]], anchor: int | None
    ) -> tuple[list[int], list[tuple[int, int]]]:
        if len(ids) <= self.max_tokens:
            self.window_start = 0
            return ids, offsets
        at = len(ids) if anchor is None else sum(1 for s, _ in offsets if s < anchor)
        # Smallest step-aligned start that keeps the anchor token inside the window.
        low = max(0, at - self.max_tokens + 1)
        start = -(-low // self.window_step) * self.window_step
        start = min(start, max(0, len(ids) - self.max_tokens))
        self.window_start = start
        return ids[start : start + self.max_tokens], offsets[start : start + self.max_tokens]

    # ----------------------------------------------------------------- apply

    def _apply(self, new_ids: list[int], mode: str) -> SyncStats:
        old_ids = self.ids
        if not self.store.allocated or not old_ids:
            mode = "full"
        if mode == "pie" and not self.rope.shiftable:
            mode = "exact"
        hunks = diff_ids(old_ids, new_ids) if mode != "full" else []
        if mode != "full" and not hunks:
            self.ids = new_ids
            return SyncStats("none", len(new_ids), 0, 0, 0, 0, 0.0)
        if mode == "full":
            self._encode_from(0, new_ids)
            return SyncStats("full", 0, len(new_ids), 0, 0, 0, 0.0)
        first = hunks[0].new_start
        if mode == "exact":
            self._encode_from(first, new_ids)
            return SyncStats("exact", first, len(new_ids) - first, 0, 0, len(hunks), 0.0)
        rotated, encoded = self._pie(old_ids, new_ids, hunks)
        return SyncStats("pie", first, encoded, rotated, 0, len(hunks), 0.0)

    def _mark_unseen(self) -> None:
        """An opening: every cached token behind a left-out one never saw it, so it is stale (and counted)."""
        cut = self.open_cut
        if cut is None:
            return
        self.stale_load += self.stale[cut:].count(False)
        self.stale[cut:] = [True] * (len(self.stale) - cut)

    def _refresh_span(self, start: int, end: int) -> None:
        """Re-encode ids[start:end] exactly (what precedes them is exact); the KV behind them is kept."""
        self.store.ensure_capacity(len(self.ids))
        encode_span(self.runner, self.store, start, self.ids[start:end], self.chunk)
        self.stale[start:end] = [False] * (end - start)

    def _encode_from(self, start: int, new_ids: list[int]) -> None:
        """Re-encode new_ids[start:] exactly, keeping the KV before `start`."""
        self.store.ensure_capacity(len(new_ids))
        encode_span(self.runner, self.store, start, new_ids[start:], self.chunk)
        self.ids = list(new_ids)
        self.stale = self.stale[:start] + [False] * (len(new_ids) - start)

    def _pie(self, old_ids: list[int], new_ids: list[int], hunks: list[Hunk]) -> tuple[int, int]:
        """Move + rotate the kept segments, then encode each hunk in order. Returns (rotated, encoded)."""
        segments = self._kept_segments(hunks, len(old_ids))
        moving = [(src, dst, n) for src, dst, n in segments if src != dst]
        self.store.ensure_capacity(len(new_ids))
        if moving:
            deltas = torch.cat([torch.full((n,), dst - src, dtype=torch.float32) for src, dst, n in moving])
            self.store.relocate(moving, Rotation.by(self.rope, deltas, deltas.numel()))
        new_stale = self._stale_after(hunks, len(new_ids))
        pieces = []
        for i, h in enumerate(hunks):
            # The first tokens behind a hunk are the ones its edit disturbs most; re-encode
            # `exact_after` of them (up to the next hunk) instead of keeping their rotated KV.
            # A hunk that only moves a FIM marker (a cursor jump) changes no text: none.
            limit = hunks[i + 1].new_start if i + 1 < len(hunks) else len(new_ids)
            after = 0 if self._moves_a_marker(old_ids, new_ids, h) else self.exact_after
            end = min(h.new_end + after, limit)
            pieces.append((h.new_start, new_ids[h.new_start : end]))
            new_stale[h.new_end : end] = [False] * (end - h.new_end)
        self.store.ensure_capacity(len(new_ids) + sum(len(p) for _, p in pieces))
        encode_pieces(self.runner, self.store, len(new_ids), pieces, self.chunk)
        encoded = sum(len(p) for _, p in pieces)
        self.ids = list(new_ids)
        self.stale = new_stale
        kept = sum(n for _, _, n in segments) - (encoded - sum(h.new_end - h.new_start for h in hunks))
        self.stale_load += kept
        return kept, encoded

    def _moves_a_marker(self, old_ids: list[int], new_ids: list[int], h: Hunk) -> bool:
        """The hunk moves the FIM suffix marker and changes no text (a cursor jump: the tokens either side of
        the marker may be cut differently, the text they spell is the same)."""
        if self.fim is None:
            return False
        marker = self.fim.suffix
        old, new = old_ids[h.old_start : h.old_end], new_ids[h.new_start : h.new_end]
        if (marker in old) == (marker in new):
            return False
        spell = self.tokenizer.decode
        return spell([t for t in old if t != marker]) == spell([t for t in new if t != marker])

    @staticmethod
    def _kept_segments(hunks: list[Hunk], old_len: int) -> list[tuple[int, int, int]]:
        """(old index, new index, length) of every run of tokens kept behind a hunk."""
        runs = []
        for i, h in enumerate(hunks):
            old_end = hunks[i + 1].old_start if i + 1 < len(hunks) else old_len
            if old_end > h.old_end:
                runs.append((h.old_end, h.new_end, old_end - h.old_end))
        return runs

    def _stale_after(self, hunks: list[Hunk], new_len: int) -> list[bool]:
        """Staleness per new token: kept tokens behind a hunk become stale; hunk tokens are fresh."""
        first = hunks[0].new_start
        stale = self.stale[:first] + [False] * (new_len - first)
        for i, h in enumerate(hunks):
            end = hunks[i + 1].new_start if i + 1 < len(hunks) else new_len
            stale[h.new_end : end] = [True] * (end - h.new_end)
        return stale

    def _first_stale(self) -> int | None:
        for i, s in enumerate(self.stale):
            if s:
                return i
        return None

    def _refresh_if_stale(self) -> int:
        if self.stale_load <= self.stale_threshold:
            return 0
        return self.refresh()
