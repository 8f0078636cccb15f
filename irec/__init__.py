"""irec: train and serve transformer models of user interest for recommendation."""

__version__ = "0.1.0"
