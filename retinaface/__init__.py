"""RetinaFace: single-stage face detection with five landmarks and 3D mesh coefficients."""

from .align import align_face, paste_back
from .anonymize import anonymize
from .config import InferenceConfig, LossConfig, ModelConfig, apply_overrides, model_preset
from .detector import Detector, Face
from .io import InputError
from .model import RetinaFace, build_retinaface
from .pipeline import DetectSummary, run_detect
from .views import MultiViewDetector
from .weights import WeightsError, load_model
from .workflow import FaceWorkflow, WorkflowConfig

__all__ = [
    "DetectSummary",
    "Detector",
    "Face",
    "FaceWorkflow",
    "InferenceConfig",
    "InputError",
    "LossConfig",
    "ModelConfig",
    "MultiViewDetector",
    "RetinaFace",
    "WeightsError",
    "WorkflowConfig",
    "align_face",
    "anonymize",
    "apply_overrides",
    "build_retinaface",
    "load_model",
    "model_preset",
    "paste_back",
    "run_detect",
]
