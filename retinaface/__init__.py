"""RetinaFace: single-stage face detection with five landmarks and 3D mesh coefficients."""

from .faces.align import align_face, paste_back
from .faces.anonymize import anonymize
from .config import InferenceConfig, LossConfig, ModelConfig, apply_overrides, model_preset
from .inference.detector import Detector
from .faces.face import Face
from .errors import InputError
from .model.retinaface import RetinaFace, build_retinaface
from .runner.pipeline import DetectSummary, run_detect
from .inference.views import MultiViewDetector
from .errors import WeightsError
from .model.weights import load_model
from .faces.workflow import FaceWorkflow, WorkflowConfig

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
