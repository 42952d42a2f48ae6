"""`superpie.stats` says how often the monitors stayed silent, and why (issue 15).

A monitor that does not constrain because jedi's answer was not a positive one (it knew only
`object`'s names, the object answers attributes at run time, a base class jedi could not resolve, ...)
leaves a draft to the model: the counts tell a user how much the analysis actually decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from superpie.analysis.jedi_service import JediStats
from superpie.lsp.scheduler import ModelWorker
from superpie.lsp.stats import ServerStats


@dataclass
class _Jedi:
    stats: JediStats = field(default_factory=JediStats)

    def stats_snapshot(self) -> JediStats:
        return self.stats


@dataclass
class _Engine:
    """Just what the worker publishes from: an engine whose monitors ran (it has a jedi)."""

    jedi: _Jedi = field(default_factory=_Jedi)
    loaded: bool = True
    lm: object = None
    model_name: str | None = "fake"

    def backend_status(self) -> dict[str, object]:
        return {"backend": "local", "loaded": True}

    def memory_bytes(self) -> int:
        return 0

    def shutdown(self) -> None:
        """No threads to stop."""


def test_stats_report_silenced_monitors_by_reason() -> None:
    engine = _Engine()
    silenced = {"dereference.object_only": 2, "dereference.unlisted": 1, "keyword_argument.var_keyword": 3}
    engine.jedi.stats = JediStats(questions=9, fallbacks=1, silenced=dict(silenced))
    worker = ModelWorker(engine, {}.get, idle_refresh_s=60.0)  # type: ignore[arg-type]
    worker.start()
    try:
        worker.submit(lambda e: None).result(5)  # a job: the worker publishes its snapshot after it
    finally:
        worker.stop()
    monitors = ServerStats().to_json(worker.snapshot, budget_mb=64, open_documents=0)["monitors"]
    assert monitors == {"questions": 9, "fallbacks": 1, "silenced": silenced}
