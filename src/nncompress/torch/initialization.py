"""NNCF's ``nncf.torch.initialization``: the init data loader wrapper and ``register_default_init_args``."""

from nncompress.training.config.init_args import (
    InitializingDataLoader,
    register_default_init_args,
    wrap_dataloader_for_init,
)

PTInitializingDataLoader = InitializingDataLoader

__all__ = [
    "InitializingDataLoader",
    "PTInitializingDataLoader",
    "register_default_init_args",
    "wrap_dataloader_for_init",
]
