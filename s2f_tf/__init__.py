"""s2f: Speech2Face on TensorFlow/Keras (see README.md)."""

__version__ = "0.1.0"
