"""NNI trial entry points, run as ``python -m nni_bigLittle.trial_code.<name>``.

- ``evaluate``: the drawn pair with weights inherited from a trained supernet (seconds per trial);
- ``train``: the drawn pair trained from scratch for N epochs (an intermediate result per epoch);
- ``supernet``: a whole co-training run as one trial (its parameters override the training config).

Each reports a dict final result whose ``default`` is the documented scalarised objective
(``common.DEFAULT_OBJECTIVE_DOC``).
"""
