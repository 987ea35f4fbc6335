"""The overrides that tell runs apart: for a set of runs, or of a multirun's jobs, the
``key=value`` pairs in which they differ. attnedit-status names the runs of one experiment
by them, a multirun's end names its jobs by them; W&B run names may use them.

Two sources, one rule (:func:`distinguishing_overrides`: the keys whose values differ;
none for a single item):

- command lines (:func:`parse_overrides` of a job's ``.hydra/overrides.yaml``): the
  overrides as typed, so a sweep over ``method=sad,random`` names its jobs ``method=sad``
  and ``method=random``;
- recorded configs (:func:`config_differences`, from each run's manifest): the result keys
  (signature.NON_RESULT_KEYS left out), flattened to dotted keys. A group chosen
  differently shows as ``group=<name>`` (``method=random``) instead of every key of the
  group, and a node holding other keys (``metrics``: other metrics) as ``node=[its keys]``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from attnedit.store.signature import strip_keys


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'method.alphas': [0.2, 0.4], ...}: dotted keys to leaves (lists kept whole, an empty
    mapping is a leaf)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def value_text(value: Any) -> str:
    """A value as an override writes it: ``null``, ``true``, ``[0.2,0.4]`` (no spaces)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{value_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def _differing(items: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys (in order of first appearance) whose value, or presence, differs among items."""
    keys = list(dict.fromkeys(k for item in items for k in item))
    return [k for k in keys if len({(k in item, repr(item.get(k))) for item in items}) > 1]


def distinguishing_overrides(items: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Per item, ``{key: value text}`` of the keys in which the items differ (an item
    lacking such a key leaves it out); ``[{}]`` for one item."""
    if len(items) < 2:
        return [{} for _ in items]
    keys = _differing(items)
    return [{k: value_text(item[k]) for k in keys if k in item} for item in items]


def parse_overrides(lines: Iterable[str]) -> dict[str, str]:
    """Hydra overrides as typed (``overrides.yaml``) -> {key: value}; ``+key=v`` and
    ``key=v`` are one key, a deletion ``~key`` keeps its ``~`` (value "")."""
    out: dict[str, str] = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        out[key.lstrip("+")] = value
    return out


def overrides_text(pairs: Mapping[str, str]) -> str:
    """``key=value key2=value2`` (a deletion as its ``~key``)."""
    return " ".join(k if k.startswith("~") and not v else f"{k}={v}" for k, v in pairs.items())


def _node(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _children(config: Mapping[str, Any], dotted: str) -> tuple[str, ...] | None:
    node = _node(config, dotted)
    return tuple(sorted(map(str, node))) if isinstance(node, Mapping) else None


def config_differences(configs: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Per config (a run's recorded config), ``{key: value text}`` of the result keys in
    which the configs differ, groups and nodes folded as the module says; ``[{}]`` for one."""
    if len(configs) < 2:
        return [{} for _ in configs]
    trees = [strip_keys(dict(c)) for c in configs]
    flats = [flatten(t) for t in trees]
    shown: list[dict[str, str]] = [{} for _ in trees]  # groups and nodes first: the big choices
    leaves: list[dict[str, str]] = [{} for _ in trees]
    folded: set[str] = set()  # differing keys told by a group's name or a node's keys
    keys = _differing(flats)
    # a group chosen differently: its name (method.name) stands for every key under it
    for key in keys:
        group = key.removesuffix(".name")
        if key.endswith(".name") and key not in folded:  # not inside a group folded already
            folded.update(k for k in keys if k.startswith(group + "."))
            for tree, flat, out in zip(trees, flats, shown):
                if key in flat:
                    out[group] = value_text(flat[key])
                elif _children(tree, group) is not None:  # the group, without a name
                    out[group] = "[" + ",".join(_children(tree, group)) + "]"
    for key in keys:
        if key in folded:
            continue
        parts = key.split(".")
        # the shortest node down to the key whose own keys differ (another set of metrics)
        node = next((".".join(parts[:i]) for i in range(1, len(parts) + 1)
                     if len({_children(t, ".".join(parts[:i])) for t in trees}) > 1), None)
        if node is None:
            for flat, out in zip(flats, leaves):
                if key in flat:
                    out[key] = _target_text(key, flat[key])
            continue
        folded.update(k for k in keys if k.startswith(node + "."))
        for tree, out in zip(trees, shown):
            children = _children(tree, node)
            if children is not None:
                out[node] = "[" + ",".join(children) + "]"
    return [{**first, **last} for first, last in zip(shown, leaves)]


def _target_text(key: str, value: Any) -> str:
    """``_target_`` values by the name of what they build (as the signature does)."""
    return str(value).rpartition(".")[2] if key.endswith("._target_") else value_text(value)
