"""Co-training and search strategies for ``BigLittleSpace``.

- ``cotraining``: ``SandwichCoTraining`` and ``ProgressiveShrinking`` (NNI one-shot strategies) with
  the ``CoTrainingModule`` recipe (joint loss of ``nni_bigLittle.nn.losses``) and resumable data order.
- ``nsga2``: the NSGA-II algorithm itself (ask/tell engine, non-dominated sorting, crowding, constrained
  domination, checkpointed RNG), knowing nothing of spaces or devices;
- ``evolution``: NSGA-II multi-objective search on a trained supernet (``search_supernet``) and as an
  NNI multi-trial strategy (``MultiObjectiveEvolution``).
- ``latency_target``: LightNAS latency-target search (``L + lam * (LAT/T - 1)``, lam learned by ascent).
- ``tuner``: ``BigLittleEvolution``, the constraint-aware NSGA-II as an NNI tuner for ``nnictl`` experiments.

The relaxation that lets NNI's ``DARTS``, ``GumbelDARTS`` and ``Proxyless`` run on the space belongs to the
space (``nni_bigLittle.search_spaces.relaxation``, wired in through ``BigLittleSpace.extra_oneshot_hooks``):
a model space never imports a strategy.
"""
