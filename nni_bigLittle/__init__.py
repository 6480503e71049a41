"""nni_bigLittle: coupled big/little dynamic-inference CNNs searched, co-trained and deployed with NNI 3.0.

The core package holds the elastic ops, the router, the standalone dynamic model, data, costs and
the CLI; ``nni_bigLittle.search_spaces``, ``.strategies``, ``.trial_code`` and ``.hw_predictors``
come from the repository's top-level folders of the same names. Optional backends (onnx,
onnxruntime, tensorrt, nn_meter) are imported lazily where they are used.
"""
__version__ = '0.1.0'

