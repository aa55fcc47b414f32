"""MNTP's training loss projects only the positions that predict a masked token onto the vocabulary
(`llm2vec_hf.training.mntp.predicted_positions_only`). The loss and every LoRA gradient must be the full projection's,
for heads that do more than a matrix product: Gemma2's final soft-capping, Cohere's logit scale, Granite's logits
scaling, and a mixture of experts whose loss adds the router's auxiliary loss."""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer

from llm2vec_hf.training import parse_recipe
from llm2vec_hf.training.mntp import build_mntp_trainer, predicted_positions_only
from llm2vec_hf.training.tiny_model import build_tiny_decoder, english_corpus

pytestmark = pytest.mark.usefixtures("one_thread")

#: family -> config overrides that make its head or loss differ from a plain projection.
HEADS = {
    "llama": {},
    "gemma2": {"final_logit_softcapping": 2.0},  # small, so that the cap bends the tiny model's logits
    "cohere": {"logit_scale": 0.5},
    "granite": {"logits_scaling": 3.0},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2, "output_router_logits": True,
                "router_aux_loss_coef": 0.5},
}


def loss_and_gradients(trainer, batch, full: bool):
    model = trainer.model
    model.zero_grad()
    model.train()
    loss = (Trainer.compute_loss(trainer, model, batch) if full else trainer.compute_loss(model, batch))
    loss.backward()
    gradients = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), gradients


@pytest.mark.parametrize("family", sorted(HEADS))
def test_projecting_only_the_predicting_positions_keeps_the_loss_and_gradients(tmp_path, family):
    base = build_tiny_decoder(tmp_path / "base", family, hidden_size=64, **HEADS[family])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(list(english_corpus())[:40]) + "\n")
    recipe = parse_recipe({
        "stage": "mntp", "model_name_or_path": str(base), "train_file": str(corpus), "max_seq_length": 24,
        "lora_r": 4, "lora_dropout": 0.0, "per_device_train_batch_size": 3, "max_steps": 1, "save_strategy": "no",
        "report_to": "none", "use_cpu": True, "output_dir": str(tmp_path / "out"), "disable_tqdm": True,
    })
    trainer, _ = build_mntp_trainer(recipe, None)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    assert (batch["labels"] != -100).float().mean() < 0.5  # a partial selection: the rows differ in positions

    full_loss, full_gradients = loss_and_gradients(trainer, batch, full=True)
    kept_loss, kept_gradients = loss_and_gradients(trainer, batch, full=False)
    assert torch.isfinite(full_loss)
    assert abs(kept_loss - full_loss) <= 1e-5 * abs(full_loss)
    assert full_gradients.keys() == kept_gradients.keys() and full_gradients
    for name, gradient in full_gradients.items():
        scale = gradient.abs().max().clamp_min(1e-12)
        assert (kept_gradients[name] - gradient).abs().max() <= 1e-5 * scale, name


def test_the_head_sees_only_the_predicting_positions_and_is_restored(tmp_path):
    from llm2vec_hf.loading.models import load_bidirectional

    base = build_tiny_decoder(tmp_path / "base", "llama")
    model, _, _ = load_bidirectional(str(base), for_mntp=True)
    labels = torch.full((2, 6), -100)
    labels[0, 3], labels[1, 1], labels[1, 5] = 7, 8, 9
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda module, args, output: seen.append(args[0].shape))
    with predicted_positions_only(model, labels) as targets:
        assert targets.tolist() == [[7, 8, 9]]  # row 0 position 2 predicts 7; row 1 positions 0 and 4
        model(input_ids=torch.ones(2, 6, dtype=torch.long))
    model(input_ids=torch.ones(2, 6, dtype=torch.long))
    hook.remove()
    assert seen == [torch.Size([1, 3, model.config.hidden_size]), torch.Size([2, 6, model.config.hidden_size])]
