"""The estimator's static terms against a real SFTTrainer step, the way `sftkit run` trains.

TRL's SFTTrainer changes the model after sftkit builds it (it casts a quantized model's LoRA
adapters to bf16); the estimate must describe the model that trains, so this compares with
the tensors after ``trainer.train()`` ran one optimizer step."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")
datasets = pytest.importorskip("datasets")

from sftkit.memory.estimator import shape_for  # noqa: E402
from sftkit.memory.phases import static_bytes  # noqa: E402
from sftkit.memory.setup import setup_from_recipe  # noqa: E402
from sftkit.recipe.load import load_recipe_text  # noqa: E402
from sftkit.testing import fresh_registry  # noqa: E402
from sftkit.training.measure import measured_static  # noqa: E402
from sftkit.training.techniques import memory_techniques  # noqa: E402


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(
    ("strategy", "options", "optimizer"),
    [
        ("qlora-nf4", "{rank: 4}", "adamw"),
        ("qlora-nf4", "{rank: 4, upcast_non_quantized: false, adapter_dtype: float32}", "adamw"),
        ("lora-8bit", "{rank: 4}", "paged-adamw-8bit"),
        ("lora", "{rank: 4}", "adamw-8bit"),
        ("full-sft", "{}", "adafactor"),
    ],
)
def test_static_terms_equal_the_model_sfttrainer_trains(tmp_path, strategy, options, optimizer):
    from trl import SFTConfig, SFTTrainer

    from sftkit.modeling import build_model, load_tokenizer
    from sftkit.training.optimizer import build_optimizer

    text = f"""
model: {{name_or_path: "builtin:tiny-llama", dtype: bfloat16, random_init: true}}
strategy: {{name: {strategy}, options: {options}}}
optimizer: {{name: {optimizer}}}
training: {{micro_batch_size: 2, max_seq_length: 16, gradient_checkpointing: true}}
hardware: {{gpu: cpu}}
"""
    resolved = load_recipe_text(text, registry=fresh_registry())
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(resolved.recipe)
    model = build_model(resolved, tokenizer, base_dir=tmp_path / "base")
    optimizer = build_optimizer(resolved, model)
    rows = [{"input_ids": [(7 * i + j) % 60 + 3 for j in range(16)]} for i in range(4)]
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        per_device_train_batch_size=2,
        max_length=16,
        report_to="none",
        use_cpu=True,
        bf16=True,
        save_strategy="no",
        disable_tqdm=True,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        optimizers=(optimizer, None),
    )
    for technique in memory_techniques(resolved):  # as SftkitTrainer does
        technique(trainer.model)
    trainer.train()
    measured = measured_static(model, optimizer)
    predicted = static_bytes(setup_from_recipe(resolved, shape_for(resolved), on_gpu=False))
    assert predicted.weights == measured.weights
    assert predicted.trainable == measured.trainable
    assert predicted.optimizer_state == measured.optimizer_state
