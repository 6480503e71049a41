"""The registry of bundled predictors: :class:`DeviceSpec` and ``DEVICES`` (name, metric, the data source's
builder, device and data folder of each)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nni_bigLittle.hw_predictors.devices.common import (
    FBNET_DIR, ICAS_DIR, TOPHUB_DIR, FitReport, _Context, _stem, predictor_filename,
)
from nni_bigLittle.hw_predictors.devices.help_fbnet_rpi4 import build_raspberry_pi_4
from nni_bigLittle.hw_predictors.devices.icas_jetson_nano_convnets import build_icas_energy, build_icas_latency
from nni_bigLittle.hw_predictors.devices.tvm_tophub_jetson_rpi import _build_tophub
from nni_bigLittle.hw_predictors.predictor import KernelLatencyPredictor


@dataclass(frozen=True)
class DeviceSpec:
    """One bundled predictor: its name, metric and the function that fits it from the data folder."""

    name: str
    metric: str
    builder: Callable[['_Context'], tuple[KernelLatencyPredictor, FitReport]]
    description: str
    device: str
    data_folder: str

    @property
    def key(self) -> str:
        return _stem(self.name, self.metric)

    @property
    def filename(self) -> str:
        return predictor_filename(self.name, self.metric)


# ============================================================================================ registry

DEVICES: dict[str, DeviceSpec] = {spec.key: spec for spec in (
    DeviceSpec('jetson_nano_trt_fp32', 'latency', build_icas_latency,
               'Jetson Nano, TensorRT fp32: per-type forests on per-layer shares of 12,534 iCAS network latencies',
               'NVIDIA Jetson Nano', ICAS_DIR),
    DeviceSpec('jetson_nano_trt_fp32', 'energy', build_icas_energy,
               'Jetson Nano, TensorRT fp32: GPU-rail energy per inference (mJ), same method on iCAS energy',
               'NVIDIA Jetson Nano', ICAS_DIR),
    DeviceSpec('jetson_nano_tvm', 'latency', lambda ctx: _build_tophub(ctx, 'jetson_nano_tvm'),
               'Jetson Nano GPU, TVM AutoTVM: forests on TopHub per-kernel records', 'NVIDIA Jetson Nano', TOPHUB_DIR),
    DeviceSpec('jetson_tx2_tvm', 'latency', lambda ctx: _build_tophub(ctx, 'jetson_tx2_tvm'),
               'Jetson TX2 GPU, TVM AutoTVM: forests on TopHub per-kernel records', 'NVIDIA Jetson TX2', TOPHUB_DIR),
    DeviceSpec('raspberry_pi_3b_tvm', 'latency', lambda ctx: _build_tophub(ctx, 'raspberry_pi_3b_tvm'),
               'Raspberry Pi 3B CPU, TVM AutoTVM: forests on TopHub per-kernel records', 'Raspberry Pi 3B',
               TOPHUB_DIR),
    DeviceSpec('raspberry_pi_4', 'latency', build_raspberry_pi_4,
               'Raspberry Pi 4: linear component model + MBConv forest fitted to 5,000 FBNet network latencies',
               'Raspberry Pi 4', FBNET_DIR),
)}
