"""The multi-rank side of test_deepspeed.py, started by the deepspeed launcher:

    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 tests/engine/deepspeed_job.py --plan PLAN.json

PLAN.json lists runs {"overrides": [...], "resume_from_step": int | null}. Each is one
Unlearner run from a config. A run with resume_from_step follows a finished run of the
same config: it moves that run's final model to final-uninterrupted, removes the
checkpoints after that step (as a crash would have left the folder) and resumes. Rank 0
writes RESULT.json next to the plan: for each run, by output folder name, how many
elements of the embedding this rank holds (ZeRO-3 shards it) and the full embedding size.
"""

import argparse
import gc
import json
import shutil
import sys
from pathlib import Path

import deepspeed
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fastunlearn.engine import UnlearnConfig, Unlearner, list_checkpoints


def resume_after_crash(config: UnlearnConfig, step: int) -> Path:
    output_dir = Path(config.train.output_dir)
    if dist.get_rank() == 0:
        for folder in list_checkpoints(output_dir):
            if int(folder.name.split("-")[1]) > step:
                shutil.rmtree(folder)
        shutil.move(output_dir / "final", output_dir / "final-uninterrupted")
    dist.barrier()
    return Unlearner(config).train(resume=True)


def main() -> None:
    # Plain gloo collectives: DeepSpeed's optional shared-memory ones are C++ compiled on
    # first use, minutes on a fresh CI machine, for no difference in what is tested here.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    parser = argparse.ArgumentParser()
    parser.add_argument("--plan", required=True)
    parser.add_argument("--local_rank", type=int)
    args = parser.parse_args()
    plan = json.loads(Path(args.plan).read_text())
    results = {}
    for run in plan:
        config = UnlearnConfig.load(None, run["overrides"])
        if run.get("resume_from_step") is not None:
            resume_after_crash(config, run["resume_from_step"])
            continue
        unlearner = Unlearner(config)
        embedding = unlearner.model.get_input_embeddings().weight
        results[Path(config.train.output_dir).name] = {
            "local_embedding_numel": embedding.numel(),
            "full_embedding_numel": getattr(embedding, "ds_numel", embedding.numel()),
        }
        unlearner.train()
        del unlearner, embedding
        gc.collect()
    if dist.get_rank() == 0:
        Path(args.plan).with_name("RESULT.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
