"""The package version (its own module, so that code inside the package never imports ``mrfa/__init__``)."""
__version__ = "0.1.0"
