"""The onnx backend: FaceFusion-compatible ONNX models (detector, landmarker, ArcFace embedder,
swappers, enhancers) on onnxruntime with TensorRT/CUDA/CPU providers, crops batched per inference."""
