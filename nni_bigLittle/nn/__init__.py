"""The model core, no I/O: what a big/little network is and how it runs.

- ``arch``: typed architecture records (``ArchConfig`` and its parts), ``make_divisible``;
- ``ops``: static layers (conv-BN-act, MBConv, SE, heads); ``elastic``: their weight-sharing twins for the
  supernet (one slicing routine for forward and extraction);
- ``model``: ``BigLittleModel`` (standalone, no NNI at inference) and ``BigLittleForward``;
- ``router``: the routing policies and the routing rule; ``losses``: the joint co-training loss;
- ``costs``: the MAC / parameter counter.
"""
