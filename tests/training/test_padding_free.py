"""Padding-free contrastive training: each batch runs on its real tokens only (its texts packed into one row that
attends within each text), and the loss and every LoRA gradient equal those of the padded batch.

float32, dropout off (SimCSE's attention dropout and LoRA's), the same seed and the same first batch on both
sides; ``padding_free: false`` is the padded path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm2vec_hf.modeling.packing import VARLEN_ATTENTION, forward_padding_free
from llm2vec_hf.training import parse_recipe
from llm2vec_hf.training.contrastive import build_contrastive_trainer
from llm2vec_hf.training.tiny_data import prepare_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

RELATIVE = 1e-5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    paths = prepare_tiny(tmp_path_factory.mktemp("tiny"))
    # Records of very different lengths, as E5's queries beside its passages, so that padded batches pad a lot.
    mixed = paths["supervised"].parent / "mixed.jsonl"
    records = [json.loads(line) for line in paths["supervised"].read_text().splitlines()][:24]
    with mixed.open("w") as out:
        for i, record in enumerate(records):
            record = dict(record, query=" ".join(record["query"].split()[: 1 + i % 4]),
                          positive=" ".join([record["positive"]] * (1 + i % 3)))
            out.write(json.dumps(record) + "\n")
    paths["mixed"] = mixed
    return paths


class ForwardSpy:
    """Records, per forward call of the encoder, its rows and how many texts start in it."""

    def __init__(self, model: torch.nn.Module):
        self.calls: list[tuple[int, int]] = []
        self.tokens: list[int] = []  # positions per call, padding included
        self.handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        ids, positions = kwargs["input_ids"], kwargs.get("position_ids")
        self.calls.append((ids.shape[0], ids.shape[0] if positions is None else int((positions == 0).sum())))
        self.tokens.append(ids.numel())


def loss_and_grads(recipe_values: dict, padding_free: bool):
    """The first batch's loss and the LoRA gradients of one backward pass, and the encoder's forward calls."""
    recipe = parse_recipe({**recipe_values, "padding_free": padding_free})
    trainer, _ = build_contrastive_trainer(recipe, None)
    model = trainer.model
    encoder = model[0].auto_model
    torch.manual_seed(1)
    for name, param in encoder.named_parameters():
        if "lora_B" in name:  # non-zero B, so that every LoRA weight gets a gradient
            torch.nn.init.normal_(param, std=0.2)
    model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    spy = ForwardSpy(encoder.get_base_model())
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    spy.handle.remove()
    loss_and_grads.last_call_tokens = spy.tokens
    grads = {n: p.grad.detach().clone() for n, p in encoder.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads, spy.calls, batch


def assert_same(padded, packed):
    loss_padded, grads_padded, _, _ = padded
    loss_packed, grads_packed, _, _ = packed
    assert loss_packed == pytest.approx(loss_padded, rel=RELATIVE)
    assert grads_packed.keys() == grads_padded.keys() and grads_padded
    for name, grad in grads_padded.items():
        assert grad.abs().sum() > 0, name
        scale = grad.abs().max()
        assert float((grads_packed[name] - grad).abs().max()) <= RELATIVE * float(scale), name


def values(tiny, tmp_path, stage: str, **overrides) -> dict:
    result = {
        "stage": stage, "model_name_or_path": str(tiny["base"]),
        "train_file": str(tiny["mixed"] if stage == "supervised" else tiny["corpus"]),
        "max_seq_length": 64, "lora_r": 4, "lora_dropout": 0.0, "simcse_dropout": 0.0,
        "output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 8, "max_steps": 1,
        "save_strategy": "no", "report_to": "none", "seed": 3, "use_cpu": True, "disable_tqdm": True,
        "max_train_samples": 64,
    }
    result.update(overrides)
    return result


def padding_in(batch) -> float:
    masks = [v for k, v in batch.items() if k.endswith("attention_mask")]
    return 1 - sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks)


@pytest.mark.parametrize("pooling_mode", ["mean", "weighted_mean", "eos_token"])
def test_simcse_loss_and_gradients_equal_the_padded_batch(tiny, tmp_path, pooling_mode):
    recipe = values(tiny, tmp_path, "simcse", pooling_mode=pooling_mode)
    padded, packed = loss_and_grads(recipe, False), loss_and_grads(recipe, True)
    assert padding_in(padded[3]) > 0.2  # the comparison means something only with padding in the batch
    assert all(texts == rows for rows, texts in padded[2])
    # anchor and positive columns: one call each, all 8 texts in one row
    assert packed[2] == [(1, 8), (1, 8)]
    assert_same(padded, packed)


def test_supervised_with_hard_negatives_and_gradient_checkpointing(tiny, tmp_path):
    # Checkpointing recomputes each layer during the backward pass, after the forward call returned: the packed
    # attention must still be the one the recomputation finds.
    recipe = values(tiny, tmp_path, "supervised", gradient_checkpointing=True)
    padded, packed = loss_and_grads(recipe, False), loss_and_grads(recipe, True)
    assert padding_in(padded[3]) > 0.1
    # queries, positives and negatives (8 each): every call one packed row
    assert all(rows == 1 for rows, _ in packed[2]) and sum(texts for _, texts in packed[2]) == 24
    assert_same(padded, packed)


def test_calls_hold_at_most_max_batch_tokens_and_stay_exact(tiny, tmp_path):
    """``max_batch_tokens`` splits a packed batch into several calls (bounding the layer that gradient
    checkpointing rebuilds); a text longer than the cap gets a call of its own. Loss and gradients do not move."""
    recipe = values(tiny, tmp_path, "supervised", gradient_checkpointing=True, max_batch_tokens=40)
    padded, packed = loss_and_grads(recipe, False), loss_and_grads(recipe, True)
    call_tokens = loss_and_grads.last_call_tokens
    _, _, uncapped_calls, batch = loss_and_grads(values(tiny, tmp_path, "supervised"), True)
    lengths = [int(n) for key, mask in batch.items() if key.endswith("attention_mask") for n in mask.sum(1)]
    assert max(lengths) > 40 and sum(lengths) > 3 * 40  # some calls must split, and one text is over the cap
    assert len(packed[2]) > len(uncapped_calls) and sum(texts for _, texts in packed[2]) == 24
    assert all(tokens <= 40 or texts == 1 for tokens, (_, texts) in zip(call_tokens, packed[2]))
    assert_same(padded, packed)


def test_gradcache_mini_batches_are_packed_and_exact(tiny, tmp_path):
    recipe = values(tiny, tmp_path, "supervised", use_gradcache=True, gradcache_mini_batch_size=3)
    padded, packed = loss_and_grads(recipe, False), loss_and_grads(recipe, True)
    # mini-batches of at most 3 texts, each one packed row, each run without and then with gradients
    assert all(rows == 1 and texts <= 3 for rows, texts in packed[2])
    assert sum(texts for _, texts in packed[2]) == 2 * 24
    assert_same(padded, packed)
    # and GradCache's gradients are those of the plain loss on the same batch
    plain = loss_and_grads(values(tiny, tmp_path, "supervised"), True)
    assert_same(plain, packed)


def test_eager_attention_runs_groups_of_similar_length_and_stays_exact(tiny, tmp_path):
    """Without per-text attention (eager), texts are not packed: the batch runs in groups of similar length,
    each cut to its longest text, and still equals the padded batch."""
    recipe = values(tiny, tmp_path, "supervised", attn_implementation="eager")
    padded, packed = loss_and_grads(recipe, False), loss_and_grads(recipe, True)
    assert all(texts == rows for rows, texts in packed[2]) and len(packed[2]) > len(padded[2])
    assert_same(padded, packed)


def test_official_padded_row_pooling_stays_padded(tiny, tmp_path):
    # simcse_pooling padded_row pools the padding's states, which only the padded batch has
    recipe = values(tiny, tmp_path, "simcse", simcse_pooling="padded_row")
    _, _, calls, _ = loss_and_grads(recipe, True)
    assert all(texts == rows for rows, texts in calls)


def test_padding_free_runs_the_attention_chosen_at_load_and_off_runs_padded_batches(tiny, tmp_path):
    # the varlen kernel is chosen once, when the encoder loads (`use_varlen_attention`); without spans it is sdpa
    # (`test_varlen_attention_without_spans_is_sdpa_with_its_masks`), so padding_free=False runs padded batches
    recipe = parse_recipe(values(tiny, tmp_path, "simcse"))
    assert recipe.contrastive.padding_free  # the default
    trainer, _ = build_contrastive_trainer(recipe, None)
    assert trainer.model[0].auto_model.config._attn_implementation == VARLEN_ATTENTION
    assert trainer.model[0].padding_free
    trainer, _ = build_contrastive_trainer(parse_recipe(values(tiny, tmp_path, "simcse", padding_free=False)), None)
    assert not trainer.model[0].padding_free


def test_varlen_attention_without_spans_is_sdpa_with_its_masks(tiny):
    """A model that keeps the varlen attention runs padded batches as sdpa does (the mask still applies)."""
    from llm2vec_hf.loading.models import load_bidirectional

    model, tokenizer, _ = load_bidirectional(str(tiny["base"]))
    tokenizer.padding_side = "right"
    batch = tokenizer(["a short one", "a much longer text than the first one here"], padding=True,
                      return_tensors="pt")
    assert model.config._attn_implementation == VARLEN_ATTENTION  # chosen at load
    model.config._attn_implementation = "sdpa"
    expected = model(**batch).last_hidden_state
    model.config._attn_implementation = VARLEN_ATTENTION
    got = model(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    assert torch.allclose(got[mask], expected[mask], atol=1e-5)
    packed = forward_padding_free(model, batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(packed[mask], expected[mask], atol=1e-5)
    assert (packed[~mask] == 0).all()


def test_mntp_blocks_carry_no_padding(tiny, tmp_path):
    """MNTP cuts the token stream into blocks of max_seq_length and drops each group's remainder (as the official
    group_texts does): every batch, the last one and evaluation's included, is all real tokens."""
    from llm2vec_hf.training.mntp import build_mntp_trainer

    recipe = parse_recipe({
        "stage": "mntp", "model_name_or_path": str(tiny["base"]), "train_file": str(tiny["corpus"]),
        "max_seq_length": 24, "lora_r": 4, "output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 7,
        "per_device_eval_batch_size": 5, "max_steps": 1, "save_strategy": "no", "report_to": "none",
        "use_cpu": True, "disable_tqdm": True, "max_train_samples": 300,
    })
    trainer, _ = build_mntp_trainer(recipe, None)
    for loader in (trainer.get_train_dataloader(), trainer.get_eval_dataloader()):
        batches = list(loader)
        assert len(batches) > 1
        for batch in batches:
            assert batch["input_ids"].shape[1] == 24
            assert bool(batch["attention_mask"].all())


def test_rows_padded_on_both_sides_are_packed(tiny):
    """sentence-transformers concatenates two columns padded on the left, padding the narrower on the right too:
    each row's real tokens are still one block, so the batch packs into one row and keeps its states."""
    from llm2vec_hf.loading.models import load_bidirectional

    model, tokenizer, _ = load_bidirectional(str(tiny["base"]))
    tokenizer.padding_side = "left"
    narrow = tokenizer(["a short one", "two words here"], padding=True, return_tensors="pt")
    wide = tokenizer(["a much longer text than the first one here", "x"], padding=True, return_tensors="pt")
    extra = wide["input_ids"].shape[1] - narrow["input_ids"].shape[1]
    input_ids = torch.cat([torch.nn.functional.pad(narrow["input_ids"], (0, extra), value=0), wide["input_ids"]])
    attention_mask = torch.cat([torch.nn.functional.pad(narrow["attention_mask"], (0, extra)), wide["attention_mask"]])
    expected = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    model.config._attn_implementation = VARLEN_ATTENTION
    spy = ForwardSpy(model)
    packed = forward_padding_free(model, input_ids, attention_mask)
    assert spy.calls == [(1, 4)]
    mask = attention_mask.bool()
    assert torch.allclose(packed[mask], expected[mask], atol=1e-5)
