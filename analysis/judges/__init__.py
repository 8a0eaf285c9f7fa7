"""The three judges: one module each (sequential is the default)."""

from .mann_whitney import MannWhitneyJudge
from .sequential import SequentialJudge, SequentialSettings
from .threshold import ThresholdJudge

__all__ = ["SequentialJudge", "SequentialSettings", "MannWhitneyJudge", "ThresholdJudge"]
