"""NNI trial entry points, run as ``python -m nni_bigLittle.trial_code.<name>``."""
