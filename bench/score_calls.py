"""Score decision_bench's 2 KiB prompts with the builtin learned head N times, nothing else: the body
to run under callgrind for an instruction count per learned score that a shared box cannot move.

    valgrind --tool=callgrind .venv/bin/python bench/score_calls.py 1
    valgrind --tool=callgrind .venv/bin/python bench/score_calls.py 6
    # instructions per score = (collected at 6 - collected at 1) / (5 * 20 prompts)
"""

from __future__ import annotations

import sys

from modelroute_sidecar.embeddings import embedder, load_models
from modelroute_sidecar.engine.difficulty import LearnedScorer

try:
    from bench.decision_bench import build_config, two_kib_prompts
except ModuleNotFoundError:  # run as `python bench/score_calls.py`: bench/ itself is on sys.path
    from decision_bench import build_config, two_kib_prompts  # type: ignore[no-redef]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    models = load_models(build_config(learned=True))
    scorer = LearnedScorer(models["auto"].heads["builtin"], embedder().embed)
    prompts, _ = two_kib_prompts()
    for prompt in prompts:  # warm: the word cache and the head's tables, as in a serving process
        scorer(prompt, 512)
    for _ in range(rounds):
        for prompt in prompts:
            scorer(prompt, 512)


if __name__ == "__main__":
    main()
