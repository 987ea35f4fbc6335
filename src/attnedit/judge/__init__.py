"""Vision-language-model judges as metrics: a backend answers requests (a prompt text and
the exact image bytes), a protocol turns a case into requests and replies into scores
(VIEScore's tie task of GEdit-Bench, ImgEdit's rubrics), a cache keeps every reply.

Interfaces: :mod:`attnedit.judge.base`; the judge stack recorded per row:
:mod:`attnedit.judge.stack`."""
