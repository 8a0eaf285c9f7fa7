"""The judge interface, the factory the engine uses, and the asyncio-safe way to call a judge."""

from __future__ import annotations

import asyncio
from typing import Any, Literal, Protocol, runtime_checkable

from .judges import MannWhitneyJudge, SequentialJudge, ThresholdJudge
from .samples import SLO, ArmSamples
from .verdict import Verdict

__all__ = ["Judge", "make_judge", "evaluate_async", "JUDGE_KINDS", "INLINE_WORK_LIMIT"]

JUDGE_KINDS = ("sequential", "mann-whitney", "threshold")

# Work (roughly: array elements touched) below which a judge runs inline on the
# event loop. ~200k element operations is about 1-2 ms of numpy; the limit is
# conservative so that nothing close to 10 ms ever runs on the loop.
INLINE_WORK_LIMIT = 200_000


@runtime_checkable
class Judge(Protocol):
    """What the engine relies on (every judge kind implements all of it).

    * ``evaluate``: cumulative samples of the current *segment* -> a verdict.
    * ``state()`` / ``load_state(state)``: JSON, bounded; after ``load_state`` the next
      ``evaluate`` receives a new segment (arrays from zero) that adds to the stored totals.
    * ``new_segment()``: the same without a restart (resumed step, new canary weight).
    * ``carry()``: what the next step's judge continues (``make_judge(carry=...)``); None if nothing.
    """

    def evaluate(self, stable: ArmSamples, canary: ArmSamples, *, canary_share: float) -> Verdict: ...

    def state(self) -> dict: ...

    def load_state(self, state: dict) -> None: ...

    def new_segment(self) -> None: ...

    def carry(self) -> dict | None: ...


def make_judge(
    kind: Literal["sequential", "mann-whitney", "threshold"],
    slos: list[SLO],
    *,
    alpha: float,
    n_steps: int = 1,
    min_requests: int = 0,
    carry: dict | None = None,
    **options: Any,
) -> Judge:
    """Build a judge for one step of a rollout.

    ``alpha`` is the false-rollback budget of the *whole rollout*; the
    sequential judge splits it as alpha / (len(slos) * n_steps) per FAIL
    e-process and starts one per SLO per step. ``carry`` is what the previous
    step's judge returned from ``carry()`` (JSON or None): with it the FAIL
    e-processes of earlier steps keep watching this step, so harm is caught at
    any time of the rollout with the alpha accounting still valid (each
    e-process is spent once, over the whole rollout). ``slos`` may be
    :class:`SLO` objects or policy dicts/models. ``options`` go to the judge
    (e.g. ``tau``, ``pass_alpha`` or ``block`` for sequential,
    ``confidence``/``tolerance`` for mann-whitney, ``failed_check_limit``,
    ``iterations``, ``thresholds`` for threshold; mann-whitney and threshold
    ignore ``carry``). Create one judge per step.
    """
    slos = [SLO.from_dict(s) for s in slos]
    if kind == "sequential":
        return SequentialJudge(slos, alpha=alpha, n_steps=n_steps, min_requests=min_requests, carry=carry, **options)
    if kind == "mann-whitney":
        return MannWhitneyJudge(slos, alpha=alpha, n_steps=n_steps, min_requests=min_requests, carry=carry, **options)
    if kind == "threshold":
        return ThresholdJudge(slos, alpha=alpha, n_steps=n_steps, min_requests=min_requests, carry=carry, **options)
    raise ValueError(f"unknown judge {kind!r}: use one of {', '.join(JUDGE_KINDS)}")


async def evaluate_async(judge: Judge, stable: ArmSamples, canary: ArmSamples, *, canary_share: float) -> Verdict:
    """Evaluate without stalling the event loop.

    Small evaluations run inline (a thread hop costs more than they do); when
    the judge estimates more than ``INLINE_WORK_LIMIT`` of work - or another
    evaluation of the same judge holds its lock - it runs in the default
    executor's thread (numpy releases the GIL for the heavy parts).
    """
    estimate = getattr(judge, "work_estimate", None)
    if estimate is not None:
        work = estimate(stable, canary)
    else:
        work = stable.latencies_ms.size + canary.latencies_ms.size
    lock = getattr(judge, "lock", None)
    busy = lock is not None and lock.locked()
    if work <= INLINE_WORK_LIMIT and not busy:
        return judge.evaluate(stable, canary, canary_share=canary_share)
    return await asyncio.to_thread(judge.evaluate, stable, canary, canary_share=canary_share)
