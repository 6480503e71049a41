"""Build a latency predictor for *this* machine (ONNX Runtime, CPU) with nn-Meter's method.

``nni-biglittle predictor build-local`` runs :func:`build_local_predictor`:

1. **Prior.** Kernel configurations that actually occur in our spaces: the kernels (and the parts of
   the MBConv blocks) of random samples of the ``cifar`` preset (little paths and big networks),
   optionally of the ``imagenet`` preset and of timm MobileNetV3 / EfficientNet at 224x224, plus
   random perturbations of them within the observed ranges (channels, resolution, kernel 3/5/7,
   expansion, stride, SE on/off, ReLU/h-swish). Every kernel type of our networks is covered:
   ``mbconv`` (a whole block), ``conv-bn-act``, ``dwconv-bn-act``, ``se``, ``global-pool``, ``fc``,
   ``add``, ``eltwise`` (the router's softmax).
2. **Profiling.** Each configuration becomes a tiny standalone module built from the package's own
   blocks (:class:`~nni_bigLittle.nn.ops.MBConv`, :class:`~nni_bigLittle.nn.ops.ConvBNAct`, ...), is
   exported to ONNX (batch norm folded) and timed with :class:`~.profilers.OnnxRuntimeProfiler`.
   The detected kernels of the module must be exactly the one kernel meant, so the features seen at
   fitting time are those prediction sees.
3. **Calibration.** An isolated kernel pays what it does not pay inside a network: one
   ``session.run`` (about 6 µs here) and, on x86, the NCHWc reorders of its input and output
   (ONNX Runtime's NCHWc transformer keeps tensors blocked between convolutions inside a network).
   A network, in turn, pays something its kernels do not pay in isolation: once its weights no
   longer fit in the per-core L2 cache, they stream from L3 on every inference. Separate
   *calibration networks* (never the validation networks) are measured end to end *and* kernel by
   kernel. Stage A fits ::

       T_net = o + Σ_k [T_iso(k) - a - b · boundary_elements(k)] + c · W · σ((W - μ) / w)

   (``W`` the network's weight megabytes); the kernel models are fitted on the in-network costs
   ``T_iso - a - b · boundary``. Stage B fits ``T_net = o' + s · Σ_k model(k) + c' · W · σ(...)`` with
   the fitted models on the same networks (what the models smooth away): ``s`` is folded into
   the models, ``o'`` is the predictor's per-inference ``overhead``, and the network-level cache term
   is stored in ``metadata['network_term']`` and applied by ``KernelLatencyPredictor.predict`` /
   ``predict_kernels`` once per network (see :func:`network_term_ms`).
4. **Fit** a :class:`~.predictor.ForestModel` per kernel type (random forest by default; extra-trees,
   gradient boosting or any storable scikit-learn tree ensemble plug in).
5. **Adaptive refinement** (nn-Meter): the configurations with the largest error on a held-out
   *refinement* set get new configurations sampled around them, which are profiled and added;
   repeated for a few rounds within the time budget. A separate *test* set reports kernel accuracy.
6. **Validation** on random frozen networks never used for fitting or calibration, measured end to
   end: share within ±10 %, MAPE, Spearman, against a FLOPs-only linear baseline.

The machine may be shared and drift: networks are measured in passes spread over the whole build
(calibration and validation networks interleaved, the median counts), the calibration networks'
kernels at the start and at the end, and a measurement whose median sits far above its 10th
percentile (another process took the core) is repeated.

Measurements are appended to ``measurements.jsonl`` in the work folder as they are made, so a
killed build resumes without profiling anything twice.

The code is split along these steps: :mod:`.kernel_configs` (what is profiled: kernel configurations and
their standalone modules), :mod:`.config` (the build's settings and error), :mod:`.sampling` (the prior and
adaptive refinement), :mod:`.profiling` (networks, measurement cache, profiling session), :mod:`.fitting`
(calibration, kernel models, validation, report) and :mod:`.pipeline` (:func:`build_local_predictor`).
"""
from __future__ import annotations

from nni_bigLittle.hw_predictors.builder.kernel_configs import CONV_LIKE, PROFILED_TYPES, KernelConfig, \
    boundary_elements, nchwc_block_size, weight_mb
from nni_bigLittle.hw_predictors.builder.config import DATA_SOURCE, PREDICTOR_NAME, REGRESSORS, BuildConfig, \
    BuildError, default_predictor_dir, default_work_dir
from nni_bigLittle.hw_predictors.builder.sampling import DEFAULT_PART_CAPS, DEFAULT_PERTURBED, perturb, \
    prior_configs
from nni_bigLittle.hw_predictors.builder.profiling import MeasurementCache, NetworkSpec, network_specs
from nni_bigLittle.hw_predictors.builder.fitting import BuildResult, Calibration, NetworkCalibration, \
    format_validation_table, network_term_ms, predict_latency_ms, write_report
from nni_bigLittle.hw_predictors.builder.pipeline import build_local_predictor

__all__ = [
    'PREDICTOR_NAME', 'PROFILED_TYPES', 'REGRESSORS', 'BuildConfig', 'BuildError', 'BuildResult', 'KernelConfig',
    'NetworkSpec', 'MeasurementCache', 'Calibration', 'NetworkCalibration', 'network_specs', 'build_local_predictor',
    'predict_latency_ms', 'network_term_ms',
    'default_predictor_dir', 'default_work_dir', 'prior_configs', 'perturb', 'boundary_elements', 'weight_mb',
    'format_validation_table', 'write_report',
    'CONV_LIKE', 'DATA_SOURCE', 'DEFAULT_PERTURBED', 'DEFAULT_PART_CAPS', 'nchwc_block_size',
]
