"""The bias-delta scales and options, without torch: the method, the guidance and the
reports read the grid keys from here."""

#: Scales of the condition tokens' Key, Value and Query: d* the deviation, b* the mean.
PARAMS = ("dk", "dv", "bk", "bv", "dq", "bq")
#: (delta, bias) of each channel.
CHANNELS = {"key": ("dk", "bk"), "value": ("dv", "bv"), "query": ("dq", "bq")}
QKV = ("query", "key", "value")  # the order the processors hand them over
BRANCHES = ("both", "cond", "uncond")
ARITHMETIC = ("fused", "official")
#: ``guidance_arithmetic`` of a bias-delta study's unedited rows (the stock processor, no rescale;
#: the official scripts have none: their (1, 1) row is arithmetic="official" at identity scales).
STOCK = "stock"
#: The official scripts' text span: grag_scale's txt_len (leeguandong/DCAG inference.py line 50).
OFFICIAL_TEXT_TOKENS = 512
