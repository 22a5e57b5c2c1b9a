"""mrfa: Learning Motion Refinement for Unsupervised Face Animation (MRFA), re-implemented."""
__version__ = "0.1.0"
