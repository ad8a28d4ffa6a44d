"""PAFT trainers: TRL's GRPO and SFT trainers with training prompts drawn from a template pool.

Imported lazily by the CLI so that ``paft-rl pool ...`` does not pay for torch and TRL.
"""

from .common import TemplateChooser, build_chooser, build_dataset
from .grpo import PaftGRPOTrainer
from .sft import PaftSFTCollator, PaftSFTTrainer

__all__ = ["PaftGRPOTrainer", "PaftSFTCollator", "PaftSFTTrainer", "TemplateChooser", "build_chooser",
           "build_dataset"]
