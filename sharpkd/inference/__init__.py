"""Inference: tiled model runs, the CPU runtimes (OpenVINO, ONNX Runtime, PyTorch), export and benchmarks."""
