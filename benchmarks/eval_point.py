"""One evaluation point: the gsm8k evaluator on GSM8K's test problems with today's settings
and with the new path, on one loaded model, in one process (the model loads once).

    python -m benchmarks.eval_point SPEC.json RESULT.json

SPEC: ``recipe`` and ``overrides`` (the model directory, the carried GSM8K data, the card),
``limit`` (problems per variant), ``max_new_tokens`` (the same budget for every variant, so
the times compare), ``variants`` ({name: evaluator options}: ``today`` is the shipped recipe's
hand-set batch of 8, ``new`` the batch the estimator finds fits, ``new-static`` with the
static KV cache and compiled decoding). RESULT is rewritten after each variant, so a process
killed at its limit keeps what finished. A short warm-up runs first, untimed. Each variant records problems, seconds, problems
per second, the seconds the whole 1,319-problem test would take at that rate, accuracy, the
batch used and the tokens generated. With the benchmark's random weights no output stops
early (every one runs its whole budget, the slowest case) and the accuracy means nothing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

GSM8K_TEST = 1319
SCHEMA = "sftkit-benchmark-eval-point/1"


def main(argv: list[str] | None = None) -> int:
    spec_path, result_path = (Path(a) for a in (argv or sys.argv[1:]))
    spec = json.loads(spec_path.read_text())

    from sftkit.devices import use_cpu_thread_policy

    use_cpu_thread_policy(spec.get("device", "cuda"))
    from sftkit.evaluation.runner import _with_options, score
    from sftkit.modeling import load_base
    from sftkit.recipe.load import load_recipe
    from sftkit.testing import fresh_registry

    resolved = load_recipe(spec["recipe"], tuple(spec["overrides"]), registry=fresh_registry())
    result: dict[str, Any] = {"schema": SCHEMA, "spec": spec, "variants": {}}
    started = time.perf_counter()
    model, tokenizer = load_base(resolved)
    result["load_seconds"] = round(time.perf_counter() - started, 1)
    result_path.write_text(json.dumps(result, indent=1))
    base = resolved.evaluators[0]
    # Warm-up (first-call costs: kernels, allocator), so the first variant is not charged.
    score(resolved, model, tokenizer, _with_options(base, {"limit": 2, "max_new_tokens": 4}))
    for name, options in spec["variants"].items():
        settings = {"limit": spec["limit"], "max_new_tokens": spec["max_new_tokens"], **options}
        component = _with_options(base, settings)
        started = time.perf_counter()
        outcome = score(resolved, model, tokenizer, component)
        seconds = time.perf_counter() - started
        result["variants"][name] = {
            "options": settings,
            "n": outcome.n,
            "seconds": round(seconds, 2),
            "problems_per_second": round(outcome.n / seconds, 3),
            "gsm8k_test_seconds": round(GSM8K_TEST * seconds / outcome.n, 1),
            "accuracy": outcome.metrics.get("accuracy"),
            "batch_size_used": outcome.options.get("batch_size_used"),
            "merged_copy_used": outcome.options.get("merged_copy_used", False),
            "mean_new_tokens": outcome.metrics.get("mean_new_tokens"),
            "hit_token_limit": outcome.metrics.get("hit_token_limit"),
        }
        print(f"eval {name}: {json.dumps(result['variants'][name])}", flush=True)
        result_path.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
