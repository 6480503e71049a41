"""Co-training and search strategies for ``BigLittleSpace`` (sandwich co-training, progressive
shrinking, multi-objective evolution, latency-target search, the NNI tuner).

``differentiable``: the relaxation that lets NNI's ``DARTS``, ``GumbelDARTS`` and ``Proxyless`` run on
the space (wired in through ``BigLittleSpace.extra_oneshot_hooks``)."""
