"""Accuracy and escalation of a (little, big) pair at an operating point, threshold calibration and the
metrics a trial or a report shows; see :mod:`nni_bigLittle.evaluation.pairs`."""
from nni_bigLittle.evaluation.pairs import *  # noqa: F401,F403
from nni_bigLittle.evaluation.pairs import __all__  # noqa: F401
