"""RetinaFace: single-stage face detection with five landmarks, head pose and a fitted 3D face mesh."""

from .config import InferenceConfig, LossConfig, ModelConfig, SmoothConfig, apply_overrides, model_preset
from .errors import InputError, OutputError, RetinaFaceError, WeightsError
from .faces.align import align_face, paste_back
from .faces.anonymize import anonymize
from .faces.face import Face
from .faces.workflow import FaceWorkflow, WorkflowConfig
from .inference.detector import Detector, FaceDetector
from .inference.views import MultiViewDetector
from .model.retinaface import RetinaFace, build_retinaface
from .model.weights import load_model
from .runner.pipeline import DetectSummary, run_detect

__all__ = [
    "DetectSummary",
    "Detector",
    "Face",
    "FaceDetector",
    "FaceWorkflow",
    "InferenceConfig",
    "InputError",
    "LossConfig",
    "ModelConfig",
    "MultiViewDetector",
    "OutputError",
    "RetinaFace",
    "RetinaFaceError",
    "SmoothConfig",
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
