"""`python -m sweeper [-m] key=value ...`: the Hydra app. Each (multirun) job trains one grid point.

python -m sweeper --help                      config groups and their options
python -m sweeper -m 'dataset=glob(fortune_*)' model=tiny_llama method=lora,full method.r=4,8
"""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> str:
    # Imports inside the task: submitit pickles this function, and workers should pay for torch once.
    from .train.context import PointContext
    from .train.point import point_task

    # Hydra's basic launcher: no job, no stop request. Under hydra/launcher=local|slurm|ray the job
    # (sweeper.launch.job) calls point_task itself, with its own PointContext.
    return point_task(cfg, PointContext.in_job(None))


if __name__ == "__main__":
    import sys

    from .cli import checked_argv

    sys.argv = checked_argv(sys.argv)  # one-line errors for typos, before Hydra's option listings
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: finished points keep their records, a killed one its checkpoint
        print("\ninterrupted: finished points keep their records; the same command resumes the rest", file=sys.stderr)
        sys.exit(130)
