"""No unsafe load anywhere in the repository: weights and tensors are read with
``torch.load(..., weights_only=True)`` or safetensors, never pickle."""

from __future__ import annotations

import ast
from pathlib import Path

from harness import REPO


def _unsafe_loads(path: Path) -> list[str]:
    """torch.load without weights_only=True, any weights_only=False, pickle.load(s)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = f"{getattr(func.value, 'id', '?')}.{func.attr}" if isinstance(func, ast.Attribute) else ""
        flag = {k.arg: k.value for k in node.keywords}.get("weights_only")
        safe = isinstance(flag, ast.Constant) and flag.value is True
        if (name == "torch.load" and not safe) or (flag is not None and not safe) or name in ("pickle.load", "pickle.loads"):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_no_unsafe_loads_in_the_repository():
    files = [p for d in ("src", "experiments", "benchmarks", "tests") for p in (REPO / d).rglob("*.py")]
    assert len(files) > 50
    unsafe = [hit for f in files for hit in _unsafe_loads(f)]
    assert not unsafe, f"unsafe loads (use weights_only=True or safetensors): {unsafe}"
