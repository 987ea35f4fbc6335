"""The transformer classes bias-delta guidance knows: for each, the stock processor it
wraps, its guided subclass, where the attention modules are and how a call's condition
tokens are counted. qwen.py and flux.py register theirs (guidance.py imports both); an
architecture of one's own is one module that calls :func:`register`, imported before the
guidance is installed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from attnedit.errors import ConfigError

_REGISTRY: dict[type, "Architecture"] = {}


class Guided:
    """What a guided processor adds to the stock one it replaces: the controller whose
    per-call state (``controller.call``) it reads, and the stock one's attention backend
    and parallel config."""

    def __init__(self, controller: Any, stock: Any = None):
        super().__init__()
        self.controller = controller
        if stock is not None:
            self._attention_backend = stock._attention_backend
            self._parallel_config = stock._parallel_config


@dataclass(frozen=True)
class Architecture:
    """Where a transformer class keeps its attention modules and its condition tokens."""

    stock: type  # the processor class that is wrapped
    guided: type  # its guided subclass
    block_lists: tuple[str, ...]  # transformer attributes holding the blocks, in index order
    locate: Callable[[dict[str, Any], int], int]  # (forward arguments, image tokens) -> L
    official: bool = False  # the official scripts' arithmetic exists for it

    def attentions(self, transformer) -> list[Any]:
        return [block.attn for name in self.block_lists for block in getattr(transformer, name)]

    def condition_tokens(self, bound: dict[str, Any]) -> int:
        return self.locate(bound, bound["hidden_states"].shape[1])


def register(transformer_class: type, architecture: Architecture) -> None:
    _REGISTRY[transformer_class] = architecture


def architecture_of(transformer) -> Architecture:
    for cls, architecture in _REGISTRY.items():
        if isinstance(transformer, cls):
            return architecture
    names = ", ".join(cls.__name__ for cls in _REGISTRY)
    raise ConfigError(f"bias-delta guidance supports {names}, not {type(transformer).__name__}")
