"""A malformed line deep in a 100 MB JSONL file is reported at its line (the reader streams
the file line by line: it never holds the file, and it counts every line)."""

from __future__ import annotations

import json

import pytest

from sftkit.errors import DataError

pytestmark = pytest.mark.slow


def test_a_bad_line_in_a_100_mb_file_is_reported_at_its_line(registry, tmp_path):
    from sftkit.data.prepare import prepare_data
    from sftkit.recipe.load import load_recipe_text

    row = json.dumps({"question": "Q? " + "x" * 560, "answer": "Because.\n#### 1"}) + "\n"
    lines = 100 * 2**20 // len(row) + 2  # the broken line is shorter than the others
    bad = lines - 17  # 1-based line number of the broken row
    path = tmp_path / "big.jsonl"
    with path.open("w") as handle:
        for line in range(1, lines + 1):
            handle.write('{"question": "Q?", "answer": \n' if line == bad else row)
    assert path.stat().st_size >= 100 * 2**20
    text = f"""
model: {{name_or_path: "builtin:tiny-llama"}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw}}
data:
  format: {{name: gsm8k, options: {{train_file: "{path}", dev_size: 1}}}}
output_dir: "{tmp_path / "run"}"
"""
    with pytest.raises(DataError) as caught:
        prepare_data(load_recipe_text(text, registry=registry))
    message = str(caught.value)
    assert f"{path}:{bad}: not valid JSON" in message
    assert "1 malformed row" in message
