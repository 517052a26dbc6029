"""Writing export folders: SavedModel (TF Serving-loadable, string signature), ONNX with Runtime
fusions, INT8 and its gate, checked with serving's predictor.
"""
