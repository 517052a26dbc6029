"""The encoders and what loads them: Keras BERT and MPNet (shared transformer layer, classifier
head, pooling), model configs by model_type, pretrained starts (Hugging Face folders, Google
checkpoints, export folders) and the offline model packages.
"""
