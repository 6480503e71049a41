"""Co-training and search strategies for ``BigLittleSpace`` (sandwich co-training, progressive
shrinking, multi-objective evolution, latency-target search, the NNI tuner)."""
