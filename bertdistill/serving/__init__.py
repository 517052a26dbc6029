"""Inference from an export folder without TensorFlow: the predictor (tokenizer + ONNX Runtime),
the TF Serving-compatible HTTP server and the speed measurement of export folders.
"""
