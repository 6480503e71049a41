"""From a chosen model to a device: ONNX export checked against PyTorch (``export``), the stand-alone
bundle runner (``run_bundle``: numpy + onnxruntime only, copied into every bundle), side-by-side
benchmarks (``bench``) and TensorRT engines (``tensorrt``, when a GPU and TensorRT are present)."""
