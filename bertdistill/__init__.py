"""bertdistill: the shared library of the BERT knowledge distillation toolkit."""

# The package name under which Keras serializable classes are registered.
PACKAGE = "bertdistill"
__version__ = "0.2.0"
