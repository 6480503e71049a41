"""Bundled device predictors fitted from public measurements, and where predictors are looked up.

Six predictors ship with the package (``hw_predictors/bundled/``), each refitted from the public data
in ``../shared/data/latency`` by :func:`rebuild_bundled` (``nni-biglittle predictor rebuild --data
../shared/data/latency``); the raw data are never copied into the package:

=========================  ========  =====================================================================
file                       metric    fitted from
=========================  ========  =====================================================================
jetson_nano_trt_fp32       latency   iCAS: 12,534 TensorRT-fp32 conv / depthwise-separable stacks (network
                                     totals), split into per-layer costs by a layer-additive fit
jetson_nano_trt_fp32       energy    same networks, GPU-rail energy per inference (mJ, calibrated here)
jetson_nano_tvm            latency   TVM TopHub per-kernel AutoTVM records (conv, dwconv)
jetson_tx2_tvm             latency   idem
raspberry_pi_3b_tvm        latency   idem (arm_cpu)
raspberry_pi_4             latency   HW-NAS-Bench FBNet space via HELP: 5,000 whole-network latencies
=========================  ========  =====================================================================

Every fit is evaluated on held-out data split *by network* (a seeded 80/20 split of networks;
TopHub has no networks, so its split is by workload shape), next to a FLOPs-only baseline
(``cost = a * MACs + b`` fitted on the same training split), then refitted on all the data for the
bundled file. The held-out metrics are stored in the file's metadata (``fit_metrics``).

:func:`load_predictor` finds a predictor by name: an explicit ``.npz`` path, then the user's
predictor folder (``$NNI_BIGLITTLE_PREDICTORS``, default ``~/.cache/nni_bigLittle/predictors``),
then the bundled folder. Latency predictors are ``<name>.npz``, energy predictors
``<name>.energy.npz``.

Package layout: one module per data source (:mod:`.icas_jetson_nano_convnets`, :mod:`.tvm_tophub_jetson_rpi`,
:mod:`.help_fbnet_rpi4`), what they share (:mod:`.common`, :mod:`.kernel_shapes`, :mod:`.measurements`,
:mod:`.fitting`), the registry (:mod:`.registry`), rebuilding (:mod:`.rebuild`), the fit report
(:mod:`.fit_report`), lookup (:mod:`.lookup`) and the command line (:mod:`.command_line`). Every public
name of the former single module is re-exported here.
"""
from __future__ import annotations

from nni_bigLittle.hw_predictors.devices.command_line import main
from nni_bigLittle.hw_predictors.devices.common import (
    FBNET_DIR, ICAS_DIR, METRICS, REBUILD_COMMAND, SEED, TEST_FRACTION, TOPHUB_DIR, FitReport, LatencyDataError,
    predictor_filename,
)
from nni_bigLittle.hw_predictors.devices.fit_report import REPORT_NAME, format_fit_report, write_fit_report
from nni_bigLittle.hw_predictors.devices.fitting import predict_totals
from nni_bigLittle.hw_predictors.devices.help_fbnet_rpi4 import (
    FBNET_CLASSES, FBNET_FILE, FBNET_HEADER, FBNET_INPUT, FBNET_OPS, FBNET_SOURCE, FBNET_STAGES, FBNET_STEM,
    PI4_ROUTES, build_raspberry_pi_4, fbnet_layer, fbnet_layer_shapes, fbnet_network, fit_fbnet_predictor,
    load_fbnet,
)
from nni_bigLittle.hw_predictors.devices.icas_jetson_nano_convnets import (
    BACKFIT_ROUNDS, ICAS_COLUMNS, ICAS_COMMON_NOTES, ICAS_ELEMENTWISE, ICAS_RAW_COLUMNS, ICAS_SOURCE, ICAS_TYPES,
    REAL_COLUMNS, REAL_MODELS, LayerAdditiveFit, build_icas_energy, build_icas_latency, fit_icas_predictor,
    icas_network, load_icas,
)
from nni_bigLittle.hw_predictors.devices.lookup import (
    BUNDLED_DIR, USER_DIR_ENV, list_bundled, load_predictor, user_predictor_dir,
)
from nni_bigLittle.hw_predictors.devices.measurements import NetworkData
from nni_bigLittle.hw_predictors.devices.rebuild import build_predictor, rebuild_bundled
from nni_bigLittle.hw_predictors.devices.registry import DEVICES, DeviceSpec
from nni_bigLittle.hw_predictors.devices.tvm_tophub_jetson_rpi import (
    DW_CANDIDATES, TOPHUB_COLUMNS, TOPHUB_DEVICES, TOPHUB_FILE, TOPHUB_SOURCE, KernelData, load_tophub,
)

__all__ = [
    'BUNDLED_DIR', 'USER_DIR_ENV', 'LatencyDataError', 'DeviceSpec', 'FitReport', 'DEVICES', 'rebuild_bundled',
    'build_predictor', 'format_fit_report', 'write_fit_report', 'list_bundled', 'load_predictor',
    'predictor_filename', 'user_predictor_dir', 'predict_totals', 'main',
]

# The former module's other public names, re-exported so that ``from nni_bigLittle.hw_predictors.devices import
# ...`` keeps working; named here so that linters see the imports used (``__all__`` is unchanged).
_REEXPORTED = (
    REPORT_NAME, REBUILD_COMMAND, SEED, TEST_FRACTION, METRICS, ICAS_DIR, TOPHUB_DIR, FBNET_DIR, ICAS_COLUMNS,
    ICAS_RAW_COLUMNS, NetworkData, icas_network, load_icas, REAL_MODELS, REAL_COLUMNS, TOPHUB_FILE, TOPHUB_COLUMNS,
    KernelData, load_tophub, FBNET_FILE, FBNET_OPS, FBNET_STAGES, FBNET_STEM, FBNET_HEADER, FBNET_CLASSES,
    FBNET_INPUT, fbnet_layer_shapes, fbnet_layer, fbnet_network, load_fbnet, LayerAdditiveFit, ICAS_TYPES,
    ICAS_ELEMENTWISE, BACKFIT_ROUNDS, fit_icas_predictor, ICAS_SOURCE, TOPHUB_SOURCE, FBNET_SOURCE,
    ICAS_COMMON_NOTES, build_icas_latency, build_icas_energy, TOPHUB_DEVICES, DW_CANDIDATES, PI4_ROUTES,
    fit_fbnet_predictor, build_raspberry_pi_4,
)


def __getattr__(name: str):
    if name == 'DataError':  # the 0.1 name, kept for one release
        import warnings
        warnings.warn('nni_bigLittle.hw_predictors.devices.DataError is now LatencyDataError (removed in 0.3).',
                      DeprecationWarning, stacklevel=2)
        return LatencyDataError
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
