"""imgclass: folders of images in, a trained and evaluated Keras classifier out."""

__version__ = "0.1.0"
