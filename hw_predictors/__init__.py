"""Hardware latency / energy predictors, profilers and their NNI profiler adapters."""
