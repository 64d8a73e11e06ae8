"""Deployable models: exports (SavedModel, TFLite, ONNX), their verification, model cards."""
