"""The compat gate (`sftkit.compat`): every private name of a library lives there and is
checked when the trainer is built; a missing one is exit 2 naming the package, its
installed version and the newest tested; a newer package runs with one line."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from sftkit import compat
from sftkit.versions import installed

pytest.importorskip("trl")
ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"


def test_every_private_name_is_there_in_the_installed_libraries():
    missing = [f"{p.package}: {p.owner}.{p.name}" for p in compat.PRIVATE if not p.present()]
    assert missing == []
    compat.check()  # does not raise


def test_private_names_of_libraries_are_touched_in_compat_only():
    names = {p.name for p in compat.PRIVATE}
    pattern = re.compile(r"\b(?:\w+\.)+(" + "|".join(map(re.escape, names)) + r")\b")
    imports = re.compile(r"import .*\b(" + "|".join(map(re.escape, names)) + r")\b")
    found = []
    for path in sorted((ROOT / "sftkit").rglob("*.py")):
        if path.name == "compat.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line) or imports.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def test_no_private_name_is_read_with_a_default():
    """`getattr(obj, "_private", default)` hides a library's change: nowhere in sftkit."""
    found = [
        f"{path.relative_to(ROOT)}: {m.group(0)}"
        for path in sorted((ROOT / "sftkit").rglob("*.py"))
        for m in re.finditer(
            r"getattr\(\s*(?!self\b)\w+,\s*\"_(?!_|sftkit)\w+\"", path.read_text("utf-8")
        )
    ]
    assert found == []


def test_a_removed_private_name_is_exit_2_naming_the_versions(monkeypatch, tmp_path, capsys):
    import transformers

    from sftkit.cli import run_cli

    monkeypatch.delattr(transformers.Trainer, "_load_optimizer_and_scheduler")
    code = run_cli(["run", str(QUICKSTART), "--output-dir", str(tmp_path / "run")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    version = installed("transformers")
    assert f"transformers {version}" in err
    assert "Trainer._load_optimizer_and_scheduler is gone" in err
    assert f"newest tested: transformers {compat.TESTED['transformers']}" in err
    assert "Traceback" not in err


def test_an_instance_attribute_is_checked_in_the_class_source(monkeypatch):
    entry = next(p for p in compat.PRIVATE if p.name == "_tr_loss")
    assert entry.present()
    renamed = compat.Private(entry.package, entry.owner, "_tr_loss_v2", "", (), True)
    assert not renamed.present()


def test_a_newer_release_runs_with_one_line(monkeypatch):
    for package in compat.TESTED:
        if installed(package):
            monkeypatch.setitem(compat.TESTED, package, installed(package))
    assert compat.newer_than_tested() == []
    # older than any TRL sftkit accepts, so this holds on the declared minimums too
    monkeypatch.setitem(compat.TESTED, "trl", "0.1.0")
    (line,) = compat.newer_than_tested()
    assert f"trl {installed('trl')} is newer than sftkit was tested with (0.1.0)" in line
    assert compat.check() == [line]


def test_liger_kernels_come_from_liger_kernels_own_apply_function(monkeypatch):
    """liger-kernel needs Triton (CUDA): here its per-model table is stood in for, and the
    function chosen for the model's type is called on the instance, loss kernels off."""
    from sftkit.training.techniques import apply_liger_kernels

    calls = []

    def apply_liger_kernel_to_llama(
        rope=True, cross_entropy=False, fused_linear_cross_entropy=True, swiglu=True, model=None
    ):
        calls.append((model, cross_entropy, fused_linear_cross_entropy, rope))

    fake = types.ModuleType("liger_kernel.transformers.monkey_patch")
    fake.MODEL_TYPE_TO_APPLY_LIGER_FN = {"llama": apply_liger_kernel_to_llama}
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.monkey_patch", fake)
    model = types.SimpleNamespace(config=types.SimpleNamespace(model_type="llama"))
    apply_liger_kernels(model)
    assert calls == [(model, False, False, True)]
    model.config.model_type = "unknown-arch"
    from sftkit.errors import SftkitError

    with pytest.raises(SftkitError, match="no kernels for model type 'unknown-arch'"):
        apply_liger_kernels(model)


@pytest.mark.slow
def test_a_runs_log_holds_no_deprecation_warning_of_trl_or_transformers(tmp_path):
    """sftkit calls TRL and transformers through their current API: nothing they deprecate
    (TRL's use_liger_kernel, transformers' gradient_checkpointing argument, ...)."""
    from sftkit.memory.setup import installed_trl, trl_fuses
    from sftkit.testing import quick_run

    # the chunked head needs TRL's fused-head interface; older TRL (the minimums) trains on auto
    loss = "chunked" if trl_fuses(installed_trl()) else "auto"
    run_dir = quick_run(tmp_path / "run", f"training.loss={loss}")
    log = (run_dir / "sftkit.log").read_text(encoding="utf-8")
    deprecations = [
        line
        for line in log.splitlines()
        if re.search(r"deprecat|FutureWarning", line, re.I) and re.search(r"trl|transformers", line)
    ]
    assert deprecations == []
