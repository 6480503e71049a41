"""nni_bigLittle: coupled big/little dynamic-inference CNNs searched, co-trained and deployed with NNI 3.0.

Layers, each importing only from the ones below it:

- ``app``: what a user drives (CLI, pipeline stages, run folders, baselines, report, nnictl experiments);
- ``training``, ``evaluation``, ``deploy``: the training recipe, operating points and metrics, ONNX /
  TensorRT export, bundles and benchmarks (``deploy/run_bundle.py`` stands alone: numpy + onnxruntime);
- ``nn``, ``data``: the model core (elastic ops, architecture records, the dynamic model, router, losses,
  costs) and the datasets;
- ``errors``: :class:`BigLittleError`, the base of every exception the package raises.

``nni_bigLittle.search_spaces``, ``.strategies``, ``.trial_code`` and ``.hw_predictors`` come from the
repository's top-level folders of the same names. Optional backends (onnx, onnxruntime, tensorrt,
nn_meter) are imported lazily where they are used.
"""
from nni_bigLittle import _deprecated, errors  # noqa: F401 (errors: the base the stand-alone scripts look up)

__version__ = '0.2.0'

_deprecated.install()
