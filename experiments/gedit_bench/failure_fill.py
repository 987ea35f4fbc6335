"""What filling a failed judge call does to a mean, measured on replayed replies.

The replies are the kinds the stub server of the tests replays (tests/support/stub_openai.py):
answers in VIEScore's JSON, and failures: prose without scores, a bare refusal (GEdit's
OpenAI wrapper returns "" for a content-policy refusal, mllm_tools/openai.py lines 153-167),
"Score: high"; a JSON cut off after a whole score list is one more reply (it parses). Each is parsed with attnedit.judge.parse; the mean SC is then computed
three ways: attnedit's (failures counted, left out), GEdit's (an unparsable reply replaced
by random.randint(0, 10): viescore/utils.py lines 186-193; its distribution over 10,000
seeded draws) and lmms-eval's (failures scored 0).

    python experiments/gedit_bench/failure_fill.py [--answered 40] [--failed 4]
"""

from __future__ import annotations

import argparse
import random
import statistics

from attnedit.judge.parse import ParseFailure, parse_viescore

FAILURES = ("I cannot evaluate these images.", "", '{"score": [7, 8], "reasoning": "cut off', "Score: high")


def replies(answered: int, failed: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    ok = [f'{{"score": [{rng.randint(4, 9)}, {rng.randint(5, 10)}], "reasoning": "r"}}' for _ in range(answered)]
    return ok + [FAILURES[i % len(FAILURES)] for i in range(failed)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answered", type=int, default=40)
    parser.add_argument("--failed", type=int, default=4)
    args = parser.parse_args()
    scores, failures = [], 0
    for text in replies(args.answered, args.failed):
        try:
            scores.append(min(parse_viescore(text)))
        except ParseFailure:
            failures += 1
    counted = statistics.fmean(scores)
    draws = []
    rng = random.Random(1)
    for _ in range(10_000):
        draws.append(statistics.fmean(scores + [rng.randint(0, 10) for _ in range(failures)]))
    zero = statistics.fmean(scores + [0] * failures)
    print(f"{len(scores)} parsed, {failures} failed ({failures / (len(scores) + failures):.1%})")
    print(f"attnedit (failures left out, counted): SC mean {counted:.4f}")
    print(f"GEdit random fill: SC mean {statistics.fmean(draws):.4f} (sd {statistics.pstdev(draws):.4f} over "
          f"10,000 draws; range {min(draws):.4f}..{max(draws):.4f}); shift {statistics.fmean(draws) - counted:+.4f}")
    print(f"lmms-eval zero fill: SC mean {zero:.4f}; shift {zero - counted:+.4f}")


if __name__ == "__main__":
    main()
