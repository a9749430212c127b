"""RetinaFace: single-stage face detection with five landmarks and 3D mesh coefficients."""

from .config import InferenceConfig, LossConfig, ModelConfig, apply_overrides, model_preset
from .detector import Detector, Face
from .io import InputError
from .model import RetinaFace, build_retinaface
from .pipeline import DetectSummary, run_detect
from .weights import WeightsError, load_model

__all__ = [
    "DetectSummary",
    "Detector",
    "Face",
    "InferenceConfig",
    "InputError",
    "LossConfig",
    "ModelConfig",
    "RetinaFace",
    "WeightsError",
    "apply_overrides",
    "build_retinaface",
    "load_model",
    "model_preset",
    "run_detect",
]
