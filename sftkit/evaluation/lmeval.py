"""The ``lm-eval`` evaluator: lm-evaluation-harness's own tasks, filters and metrics, run
in-process on the model being evaluated.

The harness's transformers back end (`lm_eval.models.huggingface.HFLM`) wraps the very model
object sftkit loaded or trained (fine-tuned adapters included; nothing is saved or reloaded)
with its tokenizer, and `lm_eval.simple_evaluate` runs the tasks. What comes back is stored
like sftkit's own evaluators: every metric of every filter (``strict_match``,
``flexible_extract`` for GSM8K), the harness's standard error of the headline metric as the
interval (value ± 1.96 standard errors), and one prediction per problem with the prompt, the
raw output, what each filter kept and each score.

Offline, a task reads local files: a task YAML whose ``dataset_path: json`` and
``dataset_kwargs.data_files`` name JSONL files, in a directory given as the
``include_path`` option (`write_gsm8k_task` writes one). lm-evaluation-harness is an
optional extra (``pip install 'sftkit[lm-eval]'``); without it the evaluator exits 2 saying
so.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sftkit.errors import DataError, MissingDependencyError
from sftkit.evaluation.base import EvalResult, EvalTask
from sftkit.extras import missing

INSTALL = (
    "Install lm-evaluation-harness: `pip install 'sftkit[lm-eval]'` (or `pip install lm-eval`)."
)
Z95 = 1.959964


def require_lm_eval() -> None:
    if missing(("lm_eval",)):
        raise MissingDependencyError("lm_eval", "the lm-eval evaluator", hint=INSTALL)


class LmEvalEvaluator:
    """lm-evaluation-harness tasks on the task's model (options: `sftkit.builtin.evaluators.
    LmEvalOptions`)."""

    name = "lm-eval"

    def __init__(self, options: Any) -> None:
        require_lm_eval()  # before any model is loaded: a clean exit 2, not a traceback
        self.options = options

    def evaluate(self, task: EvalTask) -> EvalResult:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        options = self.options
        started = time.perf_counter()
        include = [str(Path(p).expanduser()) for p in options.include_path]
        for path in include:
            if not Path(path).is_dir():
                raise DataError(
                    f"lm-eval option include_path: {path} is not a directory.",
                    hint="Point it at the folder holding the task YAML files.",
                )
        # Indexing the harness's own thousands of task files takes a while: skip it when
        # every task is a local one.
        manager = TaskManager(include_path=include, include_defaults=False) if include else None
        if manager is None or any(t not in manager.all_tasks for t in options.tasks):
            manager = TaskManager(include_path=include or None)
        unknown = [t for t in options.tasks if t not in manager.all_tasks]
        if unknown:
            raise DataError(
                f"lm-eval: unknown task(s) {', '.join(unknown)} (not in lm-evaluation-harness "
                f"nor in include_path {include or '(none)'}).",
                hint="Check the task names (`lm-eval ls tasks`), or add the folder of your "
                "task YAML files to the evaluator's include_path.",
            )
        model = HFLM(
            pretrained=task.model,
            tokenizer=task.tokenizer,
            batch_size=options.batch_size or task.batch_size,
            max_length=options.max_length,
            think_end_token=options.think_end_token,
        )
        was_training = bool(getattr(task.model, "training", False))
        task.model.eval()
        try:
            with _stderr_to_log():
                output = simple_evaluate(
                    model=model,
                    tasks=list(options.tasks),
                    num_fewshot=options.num_fewshot,
                    limit=options.limit,
                    task_manager=manager,
                    gen_kwargs=dict(options.gen_kwargs) or None,
                    apply_chat_template=options.apply_chat_template,
                    log_samples=True,
                    bootstrap_iters=options.bootstrap_iters,
                )
        finally:
            if was_training:
                task.model.train()
        if output is None:  # a non-zero rank of a distributed harness run
            raise DataError("lm-eval returned no results on this process.")
        metrics, primary, stderr = harness_metrics(output["results"], options.tasks)
        predictions = harness_predictions(output.get("samples", {}), options.tasks)
        value = metrics[primary]
        if stderr is not None and math.isfinite(stderr):
            low, high = value - Z95 * stderr, value + Z95 * stderr
            if 0.0 <= value <= 1.0:
                low, high = max(0.0, low), min(1.0, high)
            metrics["ci_low"], metrics["ci_high"] = low, high
        if task.progress is not None:
            task.progress(len(predictions), len(predictions), **{primary: value})
        return EvalResult(
            evaluator=self.name,
            split="+".join(options.tasks),
            n=len(predictions),
            metrics=metrics,
            primary=primary,
            predictions=predictions,
            options={
                **options.model_dump(),
                "batch_size_used": options.batch_size or task.batch_size,
                "lm_eval_version": _version(),
                "task_versions": {t: output.get("versions", {}).get(t) for t in options.tasks},
                "n_shot": output.get("n-shot", {}),
            },
            elapsed_s=time.perf_counter() - started,
        )


def metric_name(metric: str, filter_name: str) -> str:
    """``exact_match`` under the ``strict-match`` filter is ``strict_match`` (the name sftkit's
    gsm8k evaluator gives the same score); other metrics keep theirs, with a filter other
    than ``none`` appended."""
    if metric == "exact_match" and filter_name != "none":
        return filter_name.replace("-", "_")
    return metric if filter_name == "none" else f"{metric}_{filter_name.replace('-', '_')}"


def harness_metrics(
    results: dict[str, dict[str, Any]], tasks: Sequence[str]
) -> tuple[dict[str, float], str, float | None]:
    """The harness's ``{"exact_match,strict-match": 0.4, "exact_match_stderr,...": ...}``
    per task as sftkit metrics (prefixed ``task/`` when there are several tasks), the
    headline (the first task's first metric) and its standard error."""
    metrics: dict[str, float] = {}
    primary, stderr = "", None
    for name in tasks:
        prefix = f"{name}/" if len(tasks) > 1 else ""
        for key, value in results.get(name, {}).items():
            metric, _, filter_name = key.partition(",")
            number = _number(value)
            if not filter_name or metric.endswith("_stderr") or number is None:
                continue
            shown = prefix + metric_name(metric, filter_name)
            metrics[shown] = number
            err = _number(results[name].get(f"{metric}_stderr,{filter_name}"))
            if err is not None:
                metrics[f"{shown}_stderr"] = err
            if not primary:
                primary, stderr = shown, err
    if not primary:
        raise DataError(f"lm-eval returned no numeric metric for {', '.join(tasks)}.")
    return metrics, primary, stderr


def harness_predictions(
    samples: dict[str, list[dict[str, Any]]], tasks: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per (task, problem): the prompt, target, raw output, and per filter what it
    kept and the scores (the harness logs one sample per filter)."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for name in tasks:
        for sample in samples.get(name, []):
            key = (name, int(sample["doc_id"]))
            row = rows.get(key)
            if row is None:
                arguments = sample.get("arguments") or [[""]]
                resps = sample.get("resps") or [[""]]
                row = rows[key] = {
                    "id": f"{name}-{sample['doc_id']}",
                    "task": name,
                    "prompt": _text(arguments[0][0] if arguments[0] else ""),
                    "target": _text(sample.get("target")),
                    "output": _text(resps[0][0] if resps[0] else ""),
                    "filtered": {},
                    "scores": {},
                }
            filter_name = str(sample.get("filter", "none"))
            filtered = sample.get("filtered_resps") or [""]
            row["filtered"][filter_name] = _text(filtered[0])
            for metric in sample.get("metrics", []):
                score = _number(sample.get(metric))
                if score is not None:
                    row["scores"][metric_name(metric, filter_name)] = score
    return list(rows.values())


def write_gsm8k_task(
    directory: Path,
    name: str,
    rows: Sequence[dict[str, str]],
    *,
    max_gen_toks: int = 256,
    until: Sequence[str] = ("Question:",),
    doc_to_text: str = "{{prompt}}",
) -> Path:
    """A local GSM8K-style lm-eval task: ``<directory>/<name>.jsonl`` (`rows`: ``prompt`` and
    ``answer``, or the fields `doc_to_text` names) and ``<directory>/<name>.yaml`` scoring
    them exactly as the harness's ``gsm8k`` task does (its strict-match and
    flexible-extract filters, its exact_match normalisation), greedy, zero-shot. Pass the
    directory as the evaluator's ``include_path`` and `name` in its ``tasks``."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    data = directory / f"{name}.jsonl"
    with data.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "output_type": "generate_until",
        "test_split": "test",
        "doc_to_text": doc_to_text,
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {
            "until": list(until),
            "do_sample": False,
            "temperature": 0.0,
            "max_gen_toks": max_gen_toks,
        },
        "num_fewshot": 0,
        "metric_list": [
            {
                "metric": "exact_match",
                "aggregation": "mean",
                "higher_is_better": True,
                "ignore_case": True,
                "ignore_punctuation": False,
                "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"],
            }
        ],
        "filter_list": [
            {
                "name": "strict-match",
                "filter": [
                    {"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
                    {"function": "take_first"},
                ],
            },
            {
                "name": "flexible-extract",
                "filter": [
                    {
                        "function": "regex",
                        "group_select": -1,
                        "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)",
                    },
                    {"function": "take_first"},
                ],
            },
        ],
        "metadata": {"version": 3.0},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def _stderr_to_log() -> Iterator[None]:
    """The harness writes progress bars to stderr and runs ``git describe``, whose complaint
    outside a repository goes to the process's stderr too: both go to the command's log
    (`sftkit.quiet`) instead of the terminal, as every library's output does."""
    import logging
    import os
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace").strip()
            if text:
                logging.getLogger("lm_eval").info("%s", text)


def _number(value: Any) -> float | None:
    """A harness value as a float; None for what is no number (a bool, "N/A", None)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:  # pragma: no cover - imported above, so installed
        return "?"


def split_rows(examples: Sequence[Any], template: Any, tokenizer: Any) -> list[dict[str, str]]:
    """Rows of a local task built from prepared examples: the prompt exactly as sftkit's
    evaluators render it with the run's template, and the reference answer as written (the
    harness normalises it as the gsm8k task does)."""
    return [
        {
            "prompt": template.prompt_text(example, tokenizer),
            "answer": example.reference_answer or example.completion,
        }
        for example in examples
    ]


def gsm8k_file_rows(path: Path) -> list[dict[str, str]]:
    """GSM8K's own JSONL (``question``, ``answer`` ending ``#### N``), as the rows of a local
    copy of the harness's ``gsm8k`` task (its prompt: ``Question: ...\\nAnswer:``)."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append({"question": str(row["question"]), "answer": str(row["answer"])})
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(
                    f"{path}:{line_no}: not a GSM8K row with 'question' and 'answer' ({exc})."
                ) from exc
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sftkit.evaluation.lmeval SOURCE OUT_DIR --name NAME``: write a local
    GSM8K-style lm-eval task. SOURCE is a run directory (its prepared split, rendered with
    its template: the problems and prompts sftkit's gsm8k evaluator scores) or a GSM8K
    ``.jsonl`` file (the harness's own gsm8k prompt)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sftkit.evaluation.lmeval")
    parser.add_argument("source", type=Path, help="a run directory or a GSM8K .jsonl file")
    parser.add_argument("out_dir", type=Path, help="the folder to pass as include_path")
    parser.add_argument("--name", required=True, help="the task's name (for `tasks`)")
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--max-gen-toks", type=int, default=256)
    args = parser.parse_args(argv)
    if args.source.is_file():
        rows = gsm8k_file_rows(args.source)[: args.limit]
        text = "Question: {{question}}\nAnswer:"
    else:
        from sftkit.evaluation.runner import build_template, load_examples
        from sftkit.modeling import load_tokenizer
        from sftkit.modeling.trained import run_recipe

        resolved = run_recipe(args.source)
        tokenizer = load_tokenizer(resolved.recipe)
        examples = load_examples(resolved, args.split, args.limit)
        rows, text = split_rows(examples, build_template(resolved), tokenizer), "{{prompt}}"
    path = write_gsm8k_task(
        args.out_dir, args.name, rows, max_gen_toks=args.max_gen_toks, doc_to_text=text
    )
    print(f"wrote {path} ({len(rows)} problems)")
    return 0


if __name__ == "__main__":
    from sftkit.errors import SftkitError

    try:
        raise SystemExit(main())
    except SftkitError as exc:
        print(f"error: {exc}", file=__import__("sys").stderr)
        raise SystemExit(exc.exit_code) from None
