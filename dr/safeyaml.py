"""YAML from files a person or a repository supplies, with the expansion of aliases bounded.

`yaml.safe_load` builds no objects, but it does follow aliases: a few
hundred bytes of nested anchors ("billion laughs") become a billion nodes
once anything walks the result (validation, JSON for the API server). The
composed node graph is measured first, counting a shared node each time it
is referenced, and refused beyond `MAX_NODES`.
"""

from __future__ import annotations

from typing import Any, Final

import yaml

MAX_NODES: Final = 1_000_000  # a large Helm-rendered install is a few hundred thousand


class TooLarge(yaml.YAMLError):
    """The document expands, through its aliases, to more nodes than anything dr reads can need."""


def _expanded(node: yaml.Node, sizes: dict[int, int]) -> int:
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a recursive alias counts once instead of looping
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded(k, sizes) + _expanded(v, sizes) for k, v in node.value)
    sizes[id(node)] = total
    if total > MAX_NODES:
        raise TooLarge(f"it expands through its aliases to more than {MAX_NODES} nodes (an alias bomb?)")
    return total


def _check(text: str) -> None:
    sizes: dict[int, int] = {}
    for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
        if node is not None:
            _expanded(node, sizes)


def load(text: str) -> Any:
    _check(text)
    return yaml.safe_load(text)


def load_all(text: str) -> list[Any]:
    _check(text)
    return list(yaml.safe_load_all(text))
