"""Data: the FOMM/VoxCeleb frames dataset with augmentation, and the synthetic dataset (file reading is mrfa.media)."""
from mrfa.config import AugmentationParams
from mrfa.media.video import VideoReadError, read_image, read_video

from .frames_dataset import DatasetRepeater, FramesDataset

__all__ = ["AugmentationParams", "DatasetRepeater", "FramesDataset", "VideoReadError", "read_image", "read_video"]
