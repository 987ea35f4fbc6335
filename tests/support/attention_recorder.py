"""Record the Q, K, V every attention processor hands to diffusers' dispatch_attention_fn,
the stock processors' module and the guided ones' (attnedit.methods.bias_delta.qwen,
.flux) alike."""

from __future__ import annotations

from attnedit.methods.bias_delta import flux, qwen


def record_attention(monkeypatch, stock_module) -> list[tuple]:
    """Patch dispatch_attention_fn in the guided processors' modules and ``stock_module``;
    calls land in the list."""
    calls = []
    real = qwen.dispatch_attention_fn

    def recorder(q, k, v, **kw):
        calls.append((q.clone(), k.clone(), v.clone()))
        return real(q, k, v, **kw)

    for module in (qwen, flux, stock_module):
        monkeypatch.setattr(module, "dispatch_attention_fn", recorder)
    return calls
