"""`python -m sweeper [-m] key=value ...`: the Hydra app. Each (multirun) job trains one grid point.

    python -m sweeper --help                      config groups and their options
    python -m sweeper -m 'dataset=glob(fortune_*)' model=tiny_llama method=lora,full method.r=4,8
"""
import hydra
from omegaconf import DictConfig


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> str:
    # Imports inside the task: submitit pickles this function, and workers should pay for torch once.
    from .worker import run_point, summary_line

    record = run_point(cfg)
    print(summary_line(record), flush=True)
    return record["status"]


if __name__ == "__main__":
    main()
