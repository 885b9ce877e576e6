"""The planner at scale (issue 13): every point composed as Hydra composes it, by the cheap route;
sweeper.dry_run; one process per run folder; the jobs log; bad settings (lost records: test_monitor.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

from sweeper.config import job_config
from sweeper.launch.grid import GridComposer
from sweeper.paths import CONF_DIR
from sweeper.records import Status, read_existing
from sweeper.runs import RunLock

ROOT = Path(__file__).resolve().parents[1]


def expand(cli: list[str]):
    """(config loader, multirun master config, each point's override list) as `python -m sweeper -m` has them."""
    loader = GlobalHydra.instance().config_loader()
    master = loader.load_configuration("config", cli, RunMode.MULTIRUN)
    HydraConfig.instance().set_config(master)
    task = OmegaConf.to_container(master.hydra.overrides.task)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(task)
    return loader, master, BasicSweeper.split_arguments(parsed, None)[0]


def hydra_task(loader, master, overrides):
    composed = loader.load_sweep_config(master, list(overrides))
    HydraConfig.instance().set_config(composed)
    task = OmegaConf.masked_copy(composed, [k for k in composed if k != "hydra"])
    return composed, OmegaConf.to_container(task, resolve=True)


# Every override kind: glob, choice, range, commas, key=value, interpolation values, +key, ++key,
# ~key, list values, quoted strings, a group at its default, a value equal to the default.
GRIDS = [
    [
        "dataset=glob(fortune_a*,fortune_l*)",
        "model=tiny_llama,minilm",
        "method=lora,relora,full",
        "method.r=range(2,6,2)",
        "train.seed=choice(0,1)",
        "train.lr=1e-3",
        "train.max_steps=5",
    ],
    [
        "dataset=wordnet_adj_pertainym,wordnet_noun_act_vs_rest",
        "model=tiny_llama",
        "method=lora,qlora",
        "+train.extra=1,2",
        "train.lr=${method.lr}",
        "sweeper.name=a,b",
        "~train.log_every",
        "method.alpha=8.0",
        "model.lora_targets=[q_proj,v_proj]",
        "++train.foo='x y'",
        "method.lr=0.1,1,true",
    ],
]


@pytest.mark.parametrize("cli", GRIDS, ids=["plain", "structural"])
def test_grid_composes_like_hydra(cli):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader, master, points = expand(cli)
        composer = GridComposer(loader, master)
        mine = [composer.compose(list(p)) for p in points]
        assert len(points) >= 24
        # the cheap route was taken: Hydra composed the base and each group option once, no point whole
        assert composer.fallbacks == 0
        options = {o for p in points for o in p if o.split("=")[0] in ("dataset", "model", "method")}
        assert composer.compositions <= 1 + len(options)
        for overrides, got in list(zip(points, mine))[::3]:  # Hydra's own composition is the slow part
            composed, want = hydra_task(loader, master, overrides)
            assert got.config == want, overrides
            assert {**composer.base_choices, **got.choices} == dict(composed.hydra.runtime.choices)
        # the worker's config (hydra section included) equals Hydra's, without composing
        for overrides, got in list(zip(points, mine))[::17]:
            composed, _ = hydra_task(loader, master, overrides)
            built = job_config(master, overrides, got.config, got.choices, idx=3, job_id="j")
            with_num = OmegaConf.to_container(composed.hydra, resolve=False)
            with_num["job"].update(num=3, id="j")
            assert OmegaConf.to_container(built.hydra, resolve=False) == with_num


def test_options_of_a_plain_group_are_read_not_composed():
    """12 datasets: Hydra composes the base, two datasets, the config without any (the check) and
    the model; the other datasets are read from their files, and equal Hydra's composition."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader, master, points = expand(["dataset=glob(wordnet_*)", "model=lstm", "method.r=2,4"])
        composer = GridComposer(loader, master)
        mine = [composer.compose(list(p)) for p in points]
        datasets = {o for p in points for o in p if o.startswith("dataset=")}
        assert len(datasets) >= 12 and composer.fallbacks == 0
        assert composer.compositions <= 5
        for overrides, got in list(zip(points, mine))[::5]:
            assert got.config == hydra_task(loader, master, overrides)[1], overrides


def test_a_group_the_primary_config_writes_into_is_composed_option_by_option(tmp_path):
    """config.yaml sets dataset.size after its defaults (_self_ last): an option's file is then not
    its section, the check sees it on the default, and every option goes through Hydra."""
    (tmp_path / "dataset").mkdir()
    (tmp_path / "config.yaml").write_text("defaults:\n  - dataset: a\n  - _self_\ndataset:\n  size: 1\n")
    for name, size in (("a", 5), ("b", 7), ("c", 9)):
        (tmp_path / "dataset" / f"{name}.yaml").write_text(f"name: {name}\nsize: {size}\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", [], RunMode.MULTIRUN)
        HydraConfig.instance().set_config(master)
        composer = GridComposer(loader, master)
        got = [composer.compose([f"dataset={name}"]).config["dataset"] for name in "abc"]
    assert got == [{"name": "a", "size": 1}, {"name": "b", "size": 1}, {"name": "c", "size": 1}]
    assert composer.compositions == 4  # the base, then a, b and c each


def test_points_hydra_alone_can_compose_fall_back_exactly():
    """A group option that reaches outside its section, or overlapping keys: Hydra composes the point."""
    cli = ["model=tiny_llama", "method.r=2,4", "+method.extra={a: 1}", "method.extra.a=2,3", "train.seed=0"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader, master, points = expand(cli)
        composer = GridComposer(loader, master)
        for overrides in points:
            assert composer.compose(list(overrides)).config == hydra_task(loader, master, overrides)[1]
        assert composer.fallbacks == len(points)


def test_errors_are_hydras_own():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader, master, points = expand(["train.max_stepz=3,4", "method.r=2,4"])
        composer = GridComposer(loader, master)
        with pytest.raises(Exception) as mine:
            composer.compose(list(points[0]))
        with pytest.raises(Exception) as hydras:
            loader.load_sweep_config(master, list(points[0]))
        assert type(mine.value) is type(hydras.value) and str(mine.value) == str(hydras.value)


def run_sweeper(*args: str, cwd=ROOT, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "sweeper", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_dry_run_plans_and_submits_nothing(tmp_path):
    results = tmp_path / "results"
    done = results / "runs"
    out = run_sweeper(
        "-m",
        "dataset=fortune_art_vs_rest,fortune_law_vs_rest,fortune_love_vs_rest",
        "model=tiny_llama",
        "method.r=2,4",
        "hydra/launcher=slurm",
        "hydra.launcher.max_array_size=3",
        "sweeper.chunk=2",
        "sweeper.dry_run=true",
        f"sweeper.results_dir={results}",
        f"hydra.sweep.dir={tmp_path / 'jobs'}",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    n = 6
    assert f"grid of {n}: running {n}" in out.stdout
    jobs = -(-n // 2)
    assert f"would submit {n} point(s) as {jobs} job(s) of 2 in {-(-jobs // 3)} SLURM array(s)" in out.stdout
    assert not done.exists() and not (tmp_path / "jobs" / ".submitit").exists()
    # The basic (in-process) launcher does not train under a dry run either.
    out = run_sweeper(
        "-m", "model=tiny_llama", "method.r=2,4", "sweeper.dry_run=true", f"sweeper.results_dir={results}"
    )
    assert out.returncode == 0 and "would submit 2 point(s)" in out.stdout and not done.exists()


# ---------------------------------------------------------------- one process per run folder
def test_run_lock_is_exclusive_and_dies_with_its_process(tmp_path):
    first, second = RunLock(tmp_path / "run"), RunLock(tmp_path / "run")
    assert first.acquire() and not second.acquire()
    first.release()
    assert second.acquire()
    second.release()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from sweeper.runs import RunLock; assert RunLock({str(tmp_path / 'run')!r}).acquire(); "
         "import time; print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    assert not RunLock(tmp_path / "run").acquire()
    holder.kill()
    holder.wait()
    assert RunLock(tmp_path / "run").acquire(), "a killed holder must leave no stale lock"


def test_a_point_whose_folder_is_locked_is_busy_not_trained(make_cfg):
    from sweeper.runs import run_dir_of
    from sweeper.train import run_point

    cfg = make_cfg("model=tiny_llama", "train.max_steps=2", "train.eval_size=8")
    run_dir = run_dir_of(cfg)
    lock = RunLock(run_dir)
    assert lock.acquire()
    record = run_point(cfg)
    assert record["status"] == Status.BUSY and "another process" in record["error"]
    assert read_existing(run_dir) is None, "a busy point writes nothing"
    lock.release()
    assert run_point(cfg)["status"] == Status.OK


def test_jobs_are_appended_not_rewritten(tmp_path):
    from sweeper.ledger import JOBS_FILE, SWEEP_FILE, log_jobs, log_launch, read_sweep

    launch = {"started_at": "t0", "hydra_sweep_dir": "/j", "points": {"a": {}, "b": {}}, "jobs": []}
    log_launch(tmp_path, launch)
    before = (tmp_path / SWEEP_FILE).stat()
    log_jobs(tmp_path, launch, [{"job_id": "1_0", "run_ids": ["a"]}])
    log_jobs(tmp_path, launch, [{"job_id": "1_1", "run_ids": ["b"]}])
    with open(tmp_path / JOBS_FILE, "a") as f:
        f.write('{"launch": "t0 /j", "job_id": "1_')  # a crash mid-append
    assert (tmp_path / SWEEP_FILE).stat().st_mtime_ns == before.st_mtime_ns
    jobs = read_sweep(tmp_path)["launches"][0]["jobs"]
    assert [j["job_id"] for j in jobs] == ["1_0", "1_1"]
    assert json.loads((tmp_path / SWEEP_FILE).read_text())["launches"][0]["jobs"] == []


def test_pending_array_ranges_expand_to_tasks():
    from sweeper.slurm import expand_task_ids

    assert expand_task_ids("123_[4-6,9%2]") == ["123_4", "123_5", "123_6", "123_9"]
    assert expand_task_ids("123_7") == ["123_7"]


# ---------------------------------------------------------------- bad config files and values
def test_a_malformed_dataset_file_fails_alone_in_one_line(tmp_path):
    broken = CONF_DIR / "dataset" / "zz_broken_spec_test.yaml"
    broken.write_text("name: zz_broken_spec_test\nfamily: [unclosed\n")
    try:
        results = tmp_path / "results"
        out = run_sweeper(
            "-m", "dataset=zz_broken_spec_test,fortune_art_vs_rest", "model=tiny_llama", "sweeper.dry_run=true",
            f"sweeper.results_dir={results}", f"hydra.sweep.dir={tmp_path / 'jobs'}",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        line = "[FAILED] dataset 'zz_broken_spec_test': conf/dataset/zz_broken_spec_test.yaml does not parse"
        assert line in out.stderr and "Traceback" not in out.stderr
        assert "grid of 1: running 1" in out.stdout  # the other point is planned
        failed = [r for r in (results / "runs").iterdir() if r.name.startswith("invalid-")]
        assert len(failed) == 1 and "does not parse" in read_existing(failed[0])["error"]
        # a command that does not use the file never notices it
        out = run_sweeper("-m", "model=tiny_llama", "sweeper.dry_run=true", f"sweeper.results_dir={results}")
        assert out.returncode == 0 and "zz_broken" not in out.stderr
    finally:
        broken.unlink()


def test_a_dataset_name_cannot_leave_the_cache_folder():
    from sweeper.data import DatasetError, checked_spec

    with pytest.raises(DatasetError, match="plain name"):
        checked_spec({"name": "../outside", "task": "classification", "pool": "fortunes"})


@pytest.mark.parametrize(
    "setting, message",
    [
        ("hydra.launcher.workers=0", "hydra.launcher.workers must be a positive number, got 0"),
        ("hydra.launcher.poll_s=0", "hydra.launcher.poll_s must be a positive number"),
        ("sweeper.chunk=0", "sweeper.chunk must be a positive integer or auto, got 0"),
        ("sweeper.chunk=two", "sweeper.chunk must be a positive integer or auto, got 'two'"),
    ],
)
def test_bad_launcher_settings_are_one_line(tmp_path, setting, message):
    out = run_sweeper(
        "-m", "model=tiny_llama", "hydra/launcher=local", setting, f"sweeper.results_dir={tmp_path}",
        f"hydra.sweep.dir={tmp_path / 'jobs'}",
    )  # fmt: skip
    assert out.returncode == 2 and f"error: {message}" in out.stderr and "Traceback" not in out.stderr


def test_a_control_character_cannot_reach_an_sbatch_line():
    from omegaconf import OmegaConf

    from sweeper.launch.backends import backend_class
    from sweeper.launch.options import OptionError, check_options

    params = OmegaConf.create({"timeout_min": 5, "cpus_per_task": 1, "array_parallelism": 4, "poll_s": 1,
                               "max_array_size": None, "mem_gb": None, "gpus_per_task": None, "gpus_per_node": None,
                               "name": "x", "comment": "ok\n#SBATCH --qos=high", "additional_parameters": {}})  # fmt: skip
    with pytest.raises(OptionError, match="hydra.launcher.comment holds a control character"):
        check_options(backend_class("slurm"), params, OmegaConf.create({"chunk": 1, "pack": 1}))


# ---------------------------------------------------------------- two launches of one grid
def test_two_launches_at_once_train_each_point_once(tmp_path):
    """Both launches plan every point `run`; the run folder's lock lets one process train each."""
    grid = [
        "-m", "dataset=fortune_art_vs_rest,fortune_law_vs_rest,fortune_love_vs_rest", "model=lstm",
        "train.max_steps=40", "train.log_every=1", "train.eval_size=20", "hydra/launcher=local",
        "hydra.launcher.workers=1", "hydra.launcher.poll_s=0.5", f"sweeper.results_dir={tmp_path / 'results'}",
    ]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    launches = [
        subprocess.Popen(
            [sys.executable, "-m", "sweeper", *grid, f"hydra.sweep.dir={tmp_path / f'jobs{k}'}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for k in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in launches]
    assert all(p.returncode == 0 for p in launches), [o[1][-1500:] for o in outs]
    runs = sorted((tmp_path / "results" / "runs").iterdir())
    assert len(runs) == 3
    for run in runs:
        assert read_existing(run)["status"] == "ok"
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps)) and steps[-1] == 40, f"{run.name} trained twice: {steps}"
    assert "job finished without a record" not in "".join(o[0] for o in outs)
