"""vidgpt2: video captioning with ResNet-50 frame features and a GPT-2 decoder, native to Hugging Face.

`import vidgpt2` registers the model with the Auto classes (AutoConfig, AutoModel, AutoModelForSeq2SeqLM,
AutoVideoProcessor, AutoProcessor) and marks every class for remote code, so `save_pretrained` / `push_to_hub`
write the Python modules next to the weights and `trust_remote_code=True` loads them where vidgpt2 is not installed.
Training-only dependencies (datasets, peft, evaluate, matplotlib) are not imported here.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, AutoProcessor, AutoVideoProcessor

from .captioning import caption_videos
from .configuration_vidgpt2 import VidGPT2Config
from .explanations import Explanation, explain
from .modeling_vidgpt2 import VidGPT2ForConditionalGeneration, VidGPT2PreTrainedModel
from .pipeline_vidgpt2 import VideoCaptioningPipeline
from .processing_vidgpt2 import VidGPT2Processor
from .video_io import VideoDecodeError, read_video
from .video_processing_vidgpt2 import VidGPT2VideoProcessor

__version__ = "0.1.0"


def _register() -> None:
    AutoConfig.register(VidGPT2Config.model_type, VidGPT2Config, exist_ok=True)
    AutoModel.register(VidGPT2Config, VidGPT2ForConditionalGeneration, exist_ok=True)
    AutoModelForSeq2SeqLM.register(VidGPT2Config, VidGPT2ForConditionalGeneration, exist_ok=True)
    AutoVideoProcessor.register(VidGPT2Config, VidGPT2VideoProcessor, exist_ok=True)
    AutoProcessor.register(VidGPT2Config, VidGPT2Processor, exist_ok=True)
    # remote code: save_pretrained copies the modules and writes `auto_map`
    VidGPT2Config.register_for_auto_class()
    VidGPT2ForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")
    VidGPT2VideoProcessor.register_for_auto_class("AutoVideoProcessor")
    VidGPT2Processor.register_for_auto_class("AutoProcessor")


_register()

__all__ = [
    "Explanation",
    "VideoCaptioningPipeline",
    "VideoDecodeError",
    "VidGPT2Config",
    "VidGPT2ForConditionalGeneration",
    "VidGPT2PreTrainedModel",
    "VidGPT2Processor",
    "VidGPT2VideoProcessor",
    "caption_videos",
    "explain",
    "read_video",
]
