"""Data: video I/O, the FOMM/VoxCeleb frames dataset with augmentation, and the synthetic dataset."""
from .augment import AugmentationParams
from .frames_dataset import DatasetRepeater, FramesDataset
from .video import VideoReadError, read_image, read_video

__all__ = ["AugmentationParams", "DatasetRepeater", "FramesDataset", "VideoReadError", "read_image", "read_video"]
