"""Record the Q, K, V every attention processor hands to diffusers' dispatch_attention_fn,
the stock processors' module and the guided ones' (attnedit.methods.bias_delta) alike."""

from __future__ import annotations

from attnedit.methods import bias_delta


def record_attention(monkeypatch, stock_module) -> list[tuple]:
    """Patch dispatch_attention_fn in bias_delta and ``stock_module``; calls land in the list."""
    calls = []
    real = bias_delta.dispatch_attention_fn

    def recorder(q, k, v, **kw):
        calls.append((q.clone(), k.clone(), v.clone()))
        return real(q, k, v, **kw)

    monkeypatch.setattr(bias_delta, "dispatch_attention_fn", recorder)
    monkeypatch.setattr(stock_module, "dispatch_attention_fn", recorder)
    return calls
