"""Weir's statistics: judges that turn per-arm samples into verdicts with evidence.

Pure: no network, no I/O. Metric sources (``analysis.sources*``) fill
:class:`ArmSamples`; a judge from :func:`make_judge` turns stable's and the
canary's samples into a :class:`Verdict` (pass / fail / inconclusive, a reason
and JSON evidence). ``evaluate_async`` keeps heavy evaluations off the loop.

Judges: ``sequential`` (default; anytime-valid e-processes, see
``analysis.sequential``), ``mann-whitney`` (Kayenta-compatible) and
``threshold`` (Flagger-compatible).
"""

from .judge import INLINE_WORK_LIMIT, JUDGE_KINDS, Judge, evaluate_async, make_judge
from .judges import MannWhitneyJudge, SequentialJudge, SequentialSettings, ThresholdJudge
from .samples import SLO, ArmSamples, slos_from_policy, split_latencies
from .verdict import Verdict

__all__ = [
    "ArmSamples",
    "SLO",
    "Verdict",
    "Judge",
    "make_judge",
    "evaluate_async",
    "slos_from_policy",
    "split_latencies",
    "SequentialJudge",
    "SequentialSettings",
    "MannWhitneyJudge",
    "ThresholdJudge",
    "JUDGE_KINDS",
    "INLINE_WORK_LIMIT",
]
