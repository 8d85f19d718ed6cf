"""lvm-edge device runtime. Imports numpy, OpenCV, ONNX Runtime / TensorRT lazily — never torch."""
from edge_runtime.memory.svd import OnlineSVD

__all__ = ["OnlineSVD", "__version__"]
__version__ = "0.1.0"
