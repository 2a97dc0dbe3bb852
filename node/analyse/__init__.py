"""Analysis stage: series -> volume, OpenCV pre/post-processing, ONNX Runtime, measurements."""
