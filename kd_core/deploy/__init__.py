"""Deployment: export (TorchScript, ONNX), quantization, runtimes and model cards."""
