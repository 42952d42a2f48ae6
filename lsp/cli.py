"""The `superpie` command: `complete` and `replay` (headless, scripted), `serve` (language server), `models`.

Every command drives the same `Engine`. User mistakes (a missing file, a position past the end,
bytes that are not UTF-8, a malformed session line, a bad model path) print one `superpie: error:`
line on stderr and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from superpie.completion.config import MODEL_NAMES, DecodingConfig, EngineConfig
from superpie.completion.config.fields import bare_type, check, choices, get_path, leaf_hints, replaced

EXIT_USAGE = 2


def _version() -> str:
    from superpie.lsp.startup import server_version  # without importlib.metadata: `serve` answers sooner

    return server_version()


class UserError(Exception):
    """A mistake in the user's input: reported in one line, exit status 2."""


def find_workspace(file: Path) -> Path:
    """The file's git root, else its directory."""
    start = file.resolve().parent
    for d in (start, *start.parents):
        if (d / ".git").exists():
            return d
    return start


def read_source(path: Path) -> str:
    """The file's text; UserError if it is missing, unreadable or not UTF-8."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"file '{path}' does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read '{path}': {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"'{path}' is not valid UTF-8 (bad byte at offset {exc.start})") from None


@dataclass(frozen=True)
class TreeFlag:
    """A flag that sets one field of the configuration tree: its type, choices and default are the field's."""

    flag: str  # "--max-tokens"
    path: str  # "decoding.max_tokens"
    help: str
    none_means: str = ""  # what the field's None default stands for, for the help
    metavar: str | None = None
    switch: bool = False  # a bool given as a bare flag (`--multiline`) rather than `--monitors on|off`

    @property
    def dest(self) -> str:
        """The argparse attribute the flag fills."""
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add the flag to a command's parser."""
        hint, default = _HINTS[self.path], get_path(_DEFAULTS, self.path)
        kind = bare_type(hint)
        if self.switch:
            assert kind is bool and default is False, self.path  # a bare flag can only turn a field on
            parser.add_argument(self.flag, action="store_true", help=self.help)
            return
        kw: dict = {"dest": self.dest, "metavar": self.metavar}
        if kind is bool:
            kw["choices"], kw["default"] = ["on", "off"], "on" if default else "off"
        else:
            kw["choices"], kw["default"] = choices(hint), default
            kw["type"] = kind if kind in (int, float) else str
        shown = self.none_means if default is None else kw["default"]
        parser.add_argument(self.flag, help=f"{self.help} (default: {shown})", **kw)

    def value(self, args: argparse.Namespace) -> object:
        """The flag's value as the field holds it ("on" -> True)."""
        given = getattr(args, self.dest)
        return given == "on" if bare_type(_HINTS[self.path]) is bool and not self.switch else given


_HINTS, _DEFAULTS = leaf_hints(EngineConfig), EngineConfig()
MODEL_FLAG = TreeFlag(
    "--model", "model.path", f"a named model ({', '.join(MODEL_NAMES)}) or a local Hugging Face model directory",
    "the default for this CPU (superpie models)", "PATH",
)
ENGINE_FLAGS = (
    MODEL_FLAG,
    TreeFlag("--dtype", "model.dtype", "weight precision; auto picks by CPU (bf16 + q4 with bf16 units, else fp16w)"),
    TreeFlag("--threads", "model.threads", "CPU threads", "the cores allowed that other processes leave idle"),
    TreeFlag("--layout", "model.layout", "the cached sequence: the text before the cursor, or fill-in-the-middle"),
    TreeFlag("--backend", "model.backend", "where drafts are decoded: this process, or a serving engine at --url"),
    TreeFlag("--url", "model.url", "the serving engine's base URL (--backend remote)", "none", "URL"),
    TreeFlag("--remote-model", "model.name", "the model asked of the serving engine", "the first it lists", "NAME"),
    TreeFlag("--fallback", "model.fallback", "complete with the local model while the engine is down", switch=True),
    TreeFlag("--max-tokens", "decoding.max_tokens", "new tokens per draft"),
    TreeFlag("--multiline", "decoding.multiline", "complete a block, not just the line", switch=True),
    TreeFlag("--drafts", "completion.drafts", "drafts per completion", metavar="K"),
    TreeFlag(
        "--strategy",
        "completion.strategy",
        "how k drafts are decoded",
        f"greedy for one draft, {DecodingConfig().multi_strategy} for more",
    ),
    TreeFlag(
        "--monitors",
        "monitors.enabled",
        "monitor-guided decoding: jedi keeps identifiers after `obj.` and in imports valid",
    ),
    TreeFlag("--speculate", "decoding.speculate", "greedy drafts verify proposed tokens in batches (same output)"),
    TreeFlag("--context", "context.enabled", "snippets of other workspace files ahead of the document (definitions)"),
    TreeFlag("--context-tokens", "context.tokens", "the repository context's token budget", metavar="N"),
)
MODE_FLAG = TreeFlag("--mode", "cache.mode", "how the cache follows edits")
LOG_LEVEL_FLAG = TreeFlag("--log-level", "log_level", "the least severe messages logged")
FLAGS = (*ENGINE_FLAGS, MODE_FLAG, LOG_LEVEL_FLAG)
# `serve` takes the engine's flags that choose where drafts come from; the rest are the editor's settings
SERVE_FLAGS = tuple(f for f in ENGINE_FLAGS if f.path in ("model.backend", "model.url", "model.name", "model.fallback"))


def config_from_flags(args: argparse.Namespace) -> EngineConfig:
    """The configuration tree with the flags given on the command line; UserError for an invalid value."""
    config = EngineConfig()
    for flag in FLAGS:
        if flag.dest not in vars(args):  # not a flag of this command
            continue
        value = flag.value(args)
        try:
            check(_HINTS[flag.path], value)
        except ValueError as exc:
            raise UserError(f"{flag.flag} {exc}") from None
        config = replaced(config, flag.path, value)
    return config


def _engine(args: argparse.Namespace, workspace: Path):
    from superpie.completion.engine import Engine
    from superpie.lsp.replay import deterministic_config

    config = replaced(config_from_flags(args), "workspace", str(workspace))
    return Engine(deterministic_config(config) if args.deterministic == "on" else config)


def _load(engine) -> float:
    from superpie.completion.model.loading import ModelLoadError

    try:
        return engine.ensure_loaded()
    except ModelLoadError as exc:
        raise UserError(str(exc)) from None


def cmd_complete(args: argparse.Namespace) -> int:
    """Complete at a cursor in a file and print the drafts."""
    from superpie.completion.request import CompletionRequest
    from superpie.lsp.positions import offset_at
    from superpie.lsp.replay import completion_json

    path = Path(args.file)
    text = read_source(path)
    try:
        offset = offset_at(text, args.line, args.character)
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None
    workspace = Path(args.workspace) if args.workspace else find_workspace(path)
    engine = _engine(args, workspace)
    uri = path.resolve().as_uri()
    engine.warm_monitors(uri, text)  # jedi loads the file's imports while the model loads
    load_ms = _load(engine)
    t0 = time.perf_counter()
    result = engine.complete(CompletionRequest(uri=uri, text=text, offset=offset))
    total = (time.perf_counter() - t0) * 1000 + load_ms
    engine.shutdown()
    if args.json:
        times = {"load": load_ms, "sync": result.timings_ms["sync"], "decode": result.timings_ms["decode"]}
        times["total"] = total
        out = {
            "completions": [completion_json(c) for c in result.completions],
            "timings_ms": {k: round(v, 3) if args.deterministic == "off" else None for k, v in times.items()},
        }
        if result.remote is not None:  # which engine answered, what it took from its cache, why nothing came
            out["remote"] = dataclasses.asdict(result.remote)
            out["empty_reason"] = result.empty_reason
        print(json.dumps(out, ensure_ascii=False))
        return 0
    _print_human(text, offset, result, load_ms)
    return 0


def _print_human(text: str, offset: int, result, load_ms: float) -> None:
    before = text[:offset].splitlines()[-6:]
    print("".join(f"  {line}\n" for line in before[:-1]), end="")
    last = before[-1] if before else ""
    if not result.completions:
        print(f"  {last}\u2038  (no completion)")
    for i, c in enumerate(result.completions):
        shown = c.text.replace("\n", "\n  ")
        print(f"  {last}\x1b[2m{shown}\x1b[0m" if sys.stdout.isatty() else f"  {last}{shown}")
        print(f"  -- draft {i + 1}, score {c.score:.3f}")
    t = result.timings_ms
    print(f"  (load {load_ms:.0f} ms, sync {t['sync']:.0f} ms, decode {t['decode']:.0f} ms)")


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay a recorded editing session and print one line per completion."""
    from superpie.lsp.replay import Replayer, ReplayError, check_session

    session = Path(args.session)
    if not session.is_file():
        raise UserError(f"session file '{session}' does not exist")
    workspace = Path(args.workspace) if args.workspace else find_workspace(session)
    try:
        check_session(session, workspace)  # fail on a bad line before loading the model
    except ReplayError as exc:
        raise UserError(f"{session}: {exc}") from None
    engine = _engine(args, workspace)
    _load(engine)
    try:
        for out in Replayer(engine, workspace).run(session):
            obj = out.to_json(timings=args.deterministic == "off")
            if args.json:
                print(json.dumps(obj, ensure_ascii=False), flush=True)
            else:
                top = obj["completions"][0]["text"] if obj["completions"] else ""
                c, t = obj["cache"], obj["timings_ms"]
                print(
                    f"{out.uri}:{out.position['line']}:{out.position['character']}  "
                    f"[{c['mode']} reused {c['reused']} encoded {c['encoded']} rotated {c['rotated']}]  "
                    + (f"sync {t['sync']:.1f} ms decode {t['decode']:.1f} ms  " if t["sync"] is not None else "")
                    + f"-> {top!r}",
                    flush=True,
                )
    except ReplayError as exc:
        raise UserError(f"{session}: {exc}") from None
    finally:
        engine.shutdown()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the language server until the client says exit."""
    from superpie.lsp.transport import serve

    config = config_from_flags(args)
    settings = {flag.path: get_path(config, flag.path) for flag in SERVE_FLAGS}  # the remote engine, if any
    return serve(
        tcp=args.tcp,
        model=config.model.path,
        log_level=config.log_level,
        allow_remote=args.allow_remote,
        settings=settings,
    )


def cmd_models(args: argparse.Namespace) -> int:
    """List the named models: installed or not, and which one loads when none is named on this CPU."""
    from superpie.completion.model.catalog import MODELS, choose_default, installed
    from superpie.completion.model.precision import native_bf16

    choice = choose_default(native_bf16())
    if args.default or args.best:
        print((choice.model if args.default else choice.best).name)
        return 0
    for model in MODELS.values():
        marks = ["default" if model == choice.model else "", "installed" if installed(model) else model.install]
        print(f"{model.name:20} {model.display:30} {'; '.join(m for m in marks if m)}")
    if choice.note is not None:
        print(f"note: {choice.note}")
    return 0


def _add_model_options(p: argparse.ArgumentParser) -> None:
    for flag in ENGINE_FLAGS:
        flag.add_to(p)
    p.add_argument("--workspace", metavar="DIR", help="project root (default: the file's git root, else its dir)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--deterministic",
        choices=["on", "off"],
        default="on",
        help="the same output for the same input: jedi without a time budget, a fixed thread count, "
        "times left out (default: on)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (also documents the contract)."""
    parser = argparse.ArgumentParser(prog="superpie", description="Code completion with a PIE-synced KV cache.")
    parser.add_argument("--version", action="version", version=f"superpie {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("complete", help="complete at a position in a file")
    p.add_argument("file")
    p.add_argument("--line", type=int, required=True, help="0-based line")
    p.add_argument("--character", type=int, required=True, help="0-based UTF-16 column, as in LSP")
    _add_model_options(p)
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser("replay", help="replay an editing session (JSON lines)")
    p.add_argument("session")
    MODE_FLAG.add_to(p)
    _add_model_options(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("serve", help="run the language server (stdio, or --tcp HOST:PORT)")
    transport = p.add_mutually_exclusive_group()
    transport.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio")
    # language clients that start the server themselves ask for stdio by name (vscode-languageclient)
    transport.add_argument("--stdio", action="store_true", help="talk LSP over stdin and stdout (the default)")
    p.add_argument("--allow-remote", action="store_true", help="let --tcp listen on an address that is not loopback")
    MODEL_FLAG.add_to(p)
    for flag in SERVE_FLAGS:
        flag.add_to(p)
    LOG_LEVEL_FLAG.add_to(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("models", help="list the named models and which one is the default on this CPU")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--default", action="store_true", help="print only the model loaded when none is named")
    only.add_argument("--best", action="store_true", help="print only the model that measured best on this CPU")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `superpie` console script."""
    args = build_parser().parse_args(argv)
    try:
        config_from_flags(args)  # an invalid value fails here, before a model loads
        return args.func(args)
    except UserError as exc:
        print(f"superpie: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
