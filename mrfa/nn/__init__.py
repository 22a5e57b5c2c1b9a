"""The MRFA networks, one paper box per module."""
from .bg_motion import BGMotionPredictor
from .dense_motion import DenseMotionNetwork
from .dense_motion_tps import TPSDenseMotionNetwork
from .flow_updater import MotionEncoder, RefineHead
from .generator import OcclusionAwareGenerator
from .keypoint_fomm import FOMMKeypointDetector
from .keypoint_mtia import MTIADetector
from .keypoint_tps import TPSKeypointDetector
from .mrfa import MRFA, SourceEncoding
from .refiner import MotionRefiner
from .structure_encoder import StructureEncoder

__all__ = ["BGMotionPredictor", "DenseMotionNetwork", "TPSDenseMotionNetwork", "MotionEncoder", "RefineHead",
           "OcclusionAwareGenerator", "FOMMKeypointDetector", "MTIADetector", "TPSKeypointDetector", "MRFA",
           "SourceEncoding", "MotionRefiner", "StructureEncoder"]
