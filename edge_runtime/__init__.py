"""lvm-edge device runtime. Imports numpy, OpenCV, ONNX Runtime / TensorRT lazily — never torch."""
__version__ = "0.1.0"
