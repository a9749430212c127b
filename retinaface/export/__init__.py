"""The ONNX graph of the detector and the onnxruntime model that runs it."""
