"""Loss heads and training objectives are component kinds a plugin adds: registered, listed,
validated, priced (the head) and trained, without editing sftkit."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sftkit import LossHeadSpec, ObjectiveSpec, hookimpl
from sftkit.components.loss import ChunkedCrossEntropy
from sftkit.testing import invoke_cli, quick_run

pytest.importorskip("trl")
from sftkit.training.trainer import SftkitTrainer

CALLS: list[str] = []


@dataclass(frozen=True)
class CountedChunks(ChunkedCrossEntropy):
    name = "counted"

    def saved_bytes(self, q):  # what sftkit's chunked head keeps, plus a 1 MiB tag
        return super().saved_bytes(q) + 2**20


def counted_head(hidden, lm_head, labels):
    from sftkit.training.loss import chunked_head

    CALLS.append("head")
    return chunked_head(hidden, lm_head, labels)


class CountingTrainer(SftkitTrainer):
    def compute_loss(self, *args, **kwargs):
        CALLS.append("trainer")
        return super().compute_loss(*args, **kwargs)


class Plugin:
    @hookimpl
    def register_loss_heads(self, register):
        register(LossHeadSpec("counted", "Chunked, counted.", CountedChunks(),
                              f"{__name__}:counted_head"))  # fmt: skip

    @hookimpl
    def register_objectives(self, register):
        register(ObjectiveSpec("counted-sft", "SFT, counted.", f"{__name__}:CountingTrainer",
                               "trl:SFTConfig", "sftkit.training.dataset:sft_dataset"))  # fmt: skip

    @hookimpl
    def on_train_start(self, run):
        # docs/plugin-hooks.md: the head is not installed on the model; it computes every
        # loss from the first step on, so none has been computed yet
        model = run.model
        CALLS.append("start")
        forward = model.forward  # the model's own, no head put in its place
        assert forward.__self__ is model and forward.__qualname__ == "LlamaForCausalLM.forward"


def test_a_plugins_head_and_objective_are_listed_and_validated():
    heads = invoke_cli("list", "loss_heads", plugins=[Plugin()])
    assert "counted" in heads.stdout and "liger" in heads.stdout
    assert "counted-sft" in invoke_cli("list", "objectives", plugins=[Plugin()]).stdout
    bad = invoke_cli("validate", "quickstart", "training.objective=counted-sf")
    assert bad.exit_code == 2 and "training.objective" in bad.stderr, bad.stderr
    assert "unknown objective 'counted-sf'" in bad.stderr


def test_a_plugins_head_is_priced_from_its_declaration():
    from sftkit.memory import activations
    from sftkit.memory.estimator import shape_for
    from sftkit.memory.setup import setup_from_recipe
    from sftkit.testing import registered

    with registered(Plugin()) as registry:
        from sftkit import load_recipe

        setups = {
            name: setup_from_recipe(
                load_recipe("quickstart", [f"training.loss={name}"], registry=registry),
                shape_for(load_recipe("quickstart", registry=registry)),
                on_gpu=False,
            )
            for name in ("chunked", "counted")
        }
    b, s = setups["chunked"].micro_batch_size, setups["chunked"].seq_len
    mine, theirs = (activations.loss_saved_bytes(setups[n], b, s) for n in ("counted", "chunked"))
    assert mine - theirs == 2**20


@pytest.mark.slow
def test_a_plugins_head_and_objective_train(tmp_path):
    CALLS.clear()
    run_dir = quick_run(
        tmp_path / "run", "training.loss=counted", "training.objective=counted-sft",
        plugins=[Plugin()],
    )  # fmt: skip
    assert (run_dir / "final").is_dir()
    assert CALLS.count("trainer") >= 3 and CALLS.count("head") == CALLS.count("trainer")
    assert CALLS[0] == "start"  # on_train_start came before the first loss
