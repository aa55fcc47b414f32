"""Every stage under ``torchrun --nproc_per_node=2`` on CPU (gloo), and the two-process loss equals the single-process
loss on the same global batch (SimCSE and supervised as the issue asks; MNTP too, since the Trainer averages the
token loss over all devices' masked tokens).

Two processes with 4 rows each (negatives gathered across devices) against one process with 8 rows: the same
rows per step (``GroupedBatchSampler`` cuts global batches first), the same LoRA initialisation (seeded), no
dropout. The loss of a step under DDP is the mean over ranks of each rank's loss (each rank scores its own queries
against all gathered candidates), which is what the single process computes; DDP averages gradients the same way,
so the later steps match as well.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import warnings
import sys
import textwrap

import pytest
import torch

from llm2vec_hf.training import parse_recipe, run_training
from llm2vec_hf.training.tiny_data import prepare_tiny

STEPS = 3
WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    from llm2vec_hf.training import parse_recipe, run_training
    from llm2vec_hf.training.checkpoints import world_mean

    recipes, result_file = json.loads(sys.argv[1]), sys.argv[2]
    results = {}
    for stage, values in recipes.items():
        run = run_training(parse_recipe(values))
        results[stage] = {
            "losses": world_mean(run.losses),
            "world_size": run.trainer.args.world_size,
            "backend": torch.distributed.get_backend(),
            "adapter": sorted(p for p in __import__("os").listdir(run.adapter_dir) if p.startswith("adapter_")),
        }
    if torch.distributed.get_rank() == 0:
        with open(result_file, "w") as handle:
            json.dump(results, handle)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    """
)


def values(stage: str, tiny, output_dir, batch: int, distributed: bool = False) -> dict:
    data = tiny["supervised"] if stage == "supervised" else tiny["corpus"]
    recipe = {
        "stage": stage, "model_name_or_path": str(tiny["base"]), "train_file": str(data), "max_seq_length": 32,
        "lora_r": 4, "lora_dropout": 0.0, "output_dir": str(output_dir), "per_device_train_batch_size": batch,
        "learning_rate": 2e-3, "max_steps": STEPS, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
        "seed": 11, "use_cpu": True, "disable_tqdm": True, "max_train_samples": 200,
    }
    if distributed:
        recipe["ddp_backend"] = "gloo"
    if stage == "supervised":
        # Keep the loss moderate (about 5-10 rather than 20-30 at scale 50), so that float32 rounding, which grows
        # with the loss, stays well under the 1e-5 the two runs are compared with.
        recipe["learning_rate"] = 5e-4
        recipe["loss_scale"] = 20.0
    if stage == "simcse":
        recipe["simcse_dropout"] = 0.0  # the only noise would differ between the runs
        recipe["loss_scale"] = 2.0  # without noise, scale 20 drives the loss to ~0 at once; keep it informative
    if stage == "mntp":
        recipe["validation_split_percentage"] = 0
    return recipe


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(root, tiny, attempt: int):
    recipes = {stage: values(stage, tiny, root / f"ddp{attempt}-{stage}", batch=4, distributed=True)
               for stage in ("mntp", "simcse", "supervised")}
    worker, result_file = root / "worker.py", root / f"results{attempt}.json"
    worker.write_text(WORKER)
    # A clean launch: no distributed or accelerate settings that earlier tests in this process may have left behind.
    leaked = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR",
              "MASTER_PORT")
    env = {k: v for k, v in os.environ.items()
           if k not in leaked and not k.startswith(("ACCELERATE_", "TORCHELASTIC_", "FSDP_"))}
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               str(worker), json.dumps(recipes), str(result_file)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    return done, result_file


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    tiny = prepare_tiny(root / "tiny")
    done, result_file = launch(root, tiny, attempt=1)
    if done.returncode != 0:
        # Seen about once in 15 runs on a loaded machine: a rank aborting inside gloo. One fresh launch (new
        # folders, new port); a deterministic failure fails both times and reports the second.
        warnings.warn(f"torchrun failed once (exit {done.returncode}); relaunching:\n{done.stderr[-2000:]}")
        done, result_file = launch(root, tiny, attempt=2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return tiny, root, json.loads(result_file.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["mntp", "simcse", "supervised"])
def test_stage_runs_under_torchrun_on_cpu(ddp_results, stage):
    _, _, results = ddp_results
    assert results[stage]["world_size"] == 2 and results[stage]["backend"] == "gloo"
    assert len(results[stage]["losses"]) == STEPS
    assert results[stage]["adapter"] == ["adapter_config.json", "adapter_model.safetensors"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["mntp", "simcse", "supervised"])
def test_two_process_loss_equals_single_process_loss(ddp_results, stage):
    tiny, root, results = ddp_results
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = run_training(parse_recipe(values(stage, tiny, root / f"single-{stage}", batch=8)))
    finally:
        torch.set_num_threads(threads)
    assert len(single.losses) == STEPS
    difference = max(abs(a - b) for a, b in zip(single.losses, results[stage]["losses"]))
    print(f"{stage}: single {single.losses} ddp {results[stage]['losses']} max |diff| {difference:.2e}")
    assert difference < 1e-5
