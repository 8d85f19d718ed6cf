"""lvm-edge PyTorch side: the model, training, evaluation and ONNX/TensorRT export.

Heavy imports (torch, timm, onnx) happen inside the modules that need them, so ``import export``
and ``lvm-export --help`` stay fast.
"""
__all__: list[str] = []
