"""Knowledge distillation (``"algorithm": "knowledge_distillation"``): the original model as a frozen teacher,
its distillation loss through ``ctrl.loss()``."""
