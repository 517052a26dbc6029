"""Input data: examples and task processors (SST-2 TSV, tfds, a user's TSV/CSV, pairs), WordPiece
and word tokenizers, features and tf.data batches, transfer-set augmentation and the robustness
perturbations.
"""
