"""`hydra/launcher=ray`: each job a Ray task on a running Ray cluster (`ray start --head` on one
machine, `ray start --address=<head>` on the others, or KubeRay).

A task asks for `num_cpus` / `num_gpus` (fractional: several small points share one GPU) times the
points' train.nproc, so a point's ranks start together on one node (the job spawns them, as on the
local queue). The monitor keeps at most `max_running` tasks in flight; Ray places them. Each task
runs in a fresh worker process (max_calls=1: no torch or CUDA state carried from one job to the
next) with its output in `<sweep dir>/.ray/<task id>.log`. A task whose worker or node dies is not
retried by Ray (max_retries: 0): its points get lost records, re-run by the next launch, as on SLURM.
`sweeper.detach=true` hands the queue to a detached actor on the cluster (it outlives the terminal);
`sweeper.status` asks the cluster whether that actor still follows the sweep.

Ray is imported here only, when a Ray launch (or the status of one) needs it.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..options import OptionError
from .base import Backend, BackendError, JobResult, register

TASK_NAME = "sweeper_job"  # the worker's process title while it runs a job: ray::sweeper_job
FIT_CHECK_S = 30.0  # how often the monitor asks whether a pending task can still run anywhere


def _ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never report usage from a sweep
    import ray

    return ray


def connect(address: str, namespace: str) -> str:
    """Join the cluster at `address` (never start one); its GCS address. BackendError if none is there."""
    ray = _ray()
    if not ray.is_initialized():
        _probe(address, _resolved(address))
        try:
            ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as error:
            first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
            raise BackendError(f"hydra.launcher.address={address}: no Ray cluster reachable there ({first})") from None
    return ray.get_runtime_context().gcs_address


def _resolved(address: str) -> str:
    """The host:port ray.init would dial for `address` (auto: RAY_ADDRESS, `ray start`'s file, a GCS in ps)."""
    from ray._private.services import canonicalize_bootstrap_address  # what ray.init itself calls

    try:
        return canonicalize_bootstrap_address(address) or address
    except Exception:  # noqa: BLE001  no cluster found: ray.init says so in its own words
        return address


def _probe(address: str, target: str, timeout_s: float = 5.0) -> None:
    """A host:port nobody listens on makes ray.init retry for minutes: ask the socket first."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or "://" in target:
        return  # no cluster found for `auto` (ray.init says so at once), or a ray:// client address
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        where = "there" if target == address else f"at {target}"
        raise BackendError(f"hydra.launcher.address={address}: no Ray cluster reachable {where} ({error})") from None


class RayJob:
    """A submitted task: its object ref and the task id it is known by (records, jobs.jsonl)."""

    def __init__(self, ref, need: dict[str, float]):
        self.ref, self.need = ref, need
        self.job_id = ref.task_id().hex()


def run_job(fn: Callable[[], Any], log_dir: str, threads: int) -> Any:
    """In the task's worker: the job's environment (its id, its threads), its output to its log file."""
    ray = _ray()
    task_id = ray.get_runtime_context().get_task_id()
    os.environ.update(
        SWEEPER_JOB_ID=task_id,
        SWEEPER_THREADS=str(threads),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
    )
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(Path(log_dir) / f"{task_id}.log", "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        return fn()  # max_calls=1: the worker exits after this task, its descriptors with it
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


@register
class RayTasks(Backend):
    name = "ray"
    POSITIVE = {"num_cpus": False, "memory_gb": True, "max_running": True, "poll_s": False}
    result_grace_s = 0.0  # Ray says at once why a task ended: no result file to wait for

    @classmethod
    def check_options(cls, params: Any) -> None:
        super().check_options(params)
        gpus, retries = params.get("num_gpus"), params.get("max_retries")
        if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or gpus < 0:
            raise OptionError(f"hydra.launcher.num_gpus must be a number >= 0, got {gpus!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise OptionError(f"hydra.launcher.max_retries must be an integer >= 0, got {retries!r}")

    @classmethod
    def memory_limit(cls, params):
        return (float(params.memory_gb) if params.memory_gb else None), "hydra.launcher.memory_gb"

    @classmethod
    def dry_run_where(cls, params: Any, jobs: int) -> str:
        return f"as Ray tasks ({params.num_cpus} CPU, {params.num_gpus} GPU each) on the cluster at {params.address}"

    def __init__(self, folder: Path, params: Any):
        self.params = params
        self.address = connect(str(params.address), str(params.namespace))
        self.log_dir = Path(folder).parent.parent / ".ray"  # folder: <sweep dir>/.submitit/%j
        self.in_flight: dict[str, RayJob] = {}
        self.lost: dict[str, str] = {}
        self._fit_checked = time.monotonic()
        self.max_running = int(params.max_running) if params.max_running else None
        self.remote = _ray().remote(max_calls=1)(run_job)

    # ---------------------------------------------------------------- what a task asks for
    def request(self, nproc: int) -> dict[str, float]:
        """A job's resources in Ray's names (CPU, GPU, memory, custom), for train.nproc=nproc ranks."""
        p = self.params
        need = {"CPU": float(p.num_cpus) * nproc, "GPU": float(p.num_gpus) * nproc}
        if p.memory_gb:
            need["memory"] = float(p.memory_gb) * nproc * 2**30
        need.update({str(k): float(v) * nproc for k, v in (p.resources or {}).items()})
        return {k: v for k, v in need.items() if v > 0}

    def prepare(self, nproc: int, jobs: int) -> None:
        """BackendError when no node of the cluster could ever run a job (e.g. 2 GPUs on CPU nodes);
        max_running null: as many jobs as the cluster's nodes hold at once now."""
        gpus = float(self.params.num_gpus)
        if nproc > 1 and 0 < gpus < 1:
            raise BackendError(
                f"hydra.launcher.num_gpus={gpus:g} with train.nproc={nproc}: each rank needs a GPU of its own; "
                "use num_gpus: 1 (or 0 for CPU ranks)"
            )
        need = self.request(nproc)
        nodes = _alive_nodes()
        if not any(_fits(node, need) for node in nodes):
            largest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
            raise BackendError(
                f"a Ray task here asks for {_words(need)} (train.nproc={nproc}); no node of the cluster at "
                f"{self.address} has that (largest: {_words({k: largest.get(k, 0.0) for k in need})})"
            )
        if self.max_running is None:
            self.max_running = max(
                1, sum(min(int(node.get(k, 0.0) / v + 1e-9) for k, v in need.items()) for node in nodes)
            )

    def describe(self) -> str:
        p = self.params
        return (
            f"ray: cluster at {self.address}, {p.num_cpus} CPU / {p.num_gpus} GPU per task, "
            f"at most {self.max_running} running"
        )

    # ---------------------------------------------------------------- submitting and following
    def room(self) -> int:
        return max(0, int(self.max_running or 1) - len(self.in_flight))

    def submit(self, fns: Sequence[Callable[[], Any]], nproc: int = 1) -> list:
        need = self.request(nproc)
        whole = dict(need)
        options = {
            "name": TASK_NAME,
            "num_cpus": need.pop("CPU", 0.0),
            "num_gpus": need.pop("GPU", 0.0),
            "max_retries": int(self.params.max_retries),
            "retry_exceptions": False,
        }
        if "memory" in need:
            options["memory"] = need.pop("memory")
        if need:
            options["resources"] = need
        threads = max(1, int(options["num_cpus"] // max(1, nproc)))
        jobs = []
        for fn in fns:
            job = RayJob(self.remote.options(**options).remote(fn, str(self.log_dir), threads), whole)
            self.in_flight[job.job_id] = job
            jobs.append(job)
        return jobs

    def release(self, job) -> None:
        self.in_flight.pop(job.job_id, None)

    def ended(self, job) -> bool:
        ready, _ = _ray().wait([job.ref], timeout=0, fetch_local=False)
        if not ready and time.monotonic() - self._fit_checked > FIT_CHECK_S:
            self._cancel_unrunnable()
        return bool(ready)

    def _cancel_unrunnable(self) -> None:
        """Ray keeps a task no node can run (its only fitting node was removed) pending for ever:
        cancel such tasks (their points get lost records, re-run by the next launch)."""
        self._fit_checked = time.monotonic()
        nodes = _alive_nodes()
        for job in self.in_flight.values():
            if not any(_fits(node, job.need) for node in nodes):
                self.lost.setdefault(job.job_id, "could not run: no node of the cluster has its resources any more")
                _ray().cancel(job.ref, force=True)

    def result(self, job) -> JobResult | None:
        ray = _ray()
        try:
            return JobResult(outcomes=list(ray.get(job.ref)))  # ended(): ready, so this returns at once
        except ray.exceptions.RayTaskError as error:  # the job itself raised
            lines = [line for line in str(error.cause or error).splitlines() if line.strip()]
            return JobResult(error=f"job {job.job_id} failed: {lines[-1] if lines else type(error).__name__}")
        except ray.exceptions.RayError as error:  # its worker or node died, it was cancelled, ...
            self.lost.setdefault(job.job_id, _lost_words(error))
            return None

    def lost_reason(self, job) -> str:
        why = self.lost.get(job.job_id, "ended without a result")
        return f"job {job.job_id} (Ray task) {why}; see {self.log_dir / (job.job_id + '.log')}"

    def interrupt(self, jobs: Sequence, results_dir: Path) -> str:
        for job in jobs:
            _ray().cancel(job.ref, force=True)
        return f"interrupted: cancelled {len(jobs)} Ray task(s); run the same command again to resume"

    def detach(self, queue: list, make_job: Callable, entry: dict, results_dir: Path, total: int, sweep_dir: Path):
        """A detached actor on this node follows the sweep (submits the queue, writes lost records)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from ..monitor import save_launch

        ray = _ray()
        name = f"sweeper-monitor-{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
        log_path = sweep_dir / "monitor.log"
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        actor = (
            ray.remote(SweepFollower)
            .options(name=name, lifetime="detached", num_cpus=0, max_restarts=0, scheduling_strategy=here)
            .remote()
        )
        entry["monitor"] = {"ray_actor": name, "namespace": str(self.params.namespace), "address": self.address}
        entry["monitor"]["log"] = str(log_path)
        save_launch(entry)
        ray.get(actor.follow.remote(self.params, sweep_dir, queue, make_job, entry, results_dir, total, str(log_path)))
        print(
            f"detached: Ray actor {name} follows {total} point(s) (log {log_path}); "
            f"follow with: python -m sweeper.status {results_dir}",
            flush=True,
        )

    # ---------------------------------------------------------------- sweeper.status
    @classmethod
    def job_states(cls, launches: Sequence[dict], job_ids: Sequence[str]) -> dict[str, str]:
        """Detached launches: is each one's monitor actor still on the cluster? {launch actor: alive|gone}."""
        actors = [launch["monitor"] for launch in launches if "ray_actor" in (launch.get("monitor") or {})]
        return {m["ray_actor"]: state for m in actors if (state := _actor_state(m)) is not None}

    @classmethod
    def unfinished_state(cls, job_id: str, started_by: str | None, launch: dict, states: dict) -> tuple[str, str]:
        actor = (launch.get("monitor") or {}).get("ray_actor")
        if actor is not None and states.get(actor) == "gone":
            return "stalled", ""
        return super().unfinished_state(job_id, started_by, launch, states)


class SweepFollower:
    """The detached actor of `sweeper.detach=true`: runs the monitor's loop in a thread of its own
    (its actor methods stay free), then leaves the cluster."""

    def follow(self, params, sweep_dir, queue, make_job, entry, results_dir, total, log_path) -> bool:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        args = (params, Path(sweep_dir), queue, make_job, entry, Path(results_dir), total)
        threading.Thread(target=self._run, args=args, daemon=True).start()
        return True

    def _run(self, params, sweep_dir, queue, make_job, entry, results_dir, total) -> None:
        from ..monitor import watch

        ray = _ray()
        try:
            backend = RayTasks(sweep_dir / ".submitit" / "%j", params)
            backend.prepare(nproc=max(p.nproc for job in queue for p in job), jobs=len(queue))
            monitor = watch(backend, [], queue, make_job, entry, results_dir, total, float(params.poll_s))
            print(f"sweep done: {monitor.ok} ok, {len(monitor.failed)} failed", flush=True)
        except BaseException:  # noqa: BLE001  the log says why; status then calls the sweep stalled
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            ray.kill(ray.get_runtime_context().current_actor)


def _actor_state(monitor: dict) -> str | None:
    """alive | gone for a detached launch's actor; None when the cluster cannot be asked."""
    ray = _ray()
    try:
        address = connect(str(monitor["address"]), str(monitor.get("namespace") or "sweeper"))
    except BackendError:
        return None
    if address != monitor["address"]:  # this process already joined another launch's cluster
        return None
    try:
        ray.get_actor(monitor["ray_actor"], namespace=monitor.get("namespace"))
        return "alive"
    except ValueError:  # no such actor: it finished, or died with its node
        return "gone"


def _alive_nodes() -> list[dict[str, float]]:
    return [n["Resources"] for n in _ray().nodes() if n.get("Alive")]


def _fits(node: dict[str, float], need: dict[str, float]) -> bool:
    return all(node.get(k, 0.0) >= v for k, v in need.items())


def _lost_words(error: Exception) -> str:
    ray = _ray()
    if isinstance(error, ray.exceptions.NodeDiedError):
        return "lost its node"
    if isinstance(error, ray.exceptions.WorkerCrashedError):
        return "lost its worker process (killed, out of memory, or crashed)"
    if isinstance(error, ray.exceptions.TaskCancelledError):
        return "was cancelled"
    return "ended without a result (" + (str(error).splitlines() or [type(error).__name__])[0][:200] + ")"


def _words(need: dict[str, float]) -> str:
    def one(key: str, value: float) -> str:
        return f"{value / 2**30:g} GB memory" if key == "memory" else f"{value:g} {key}"

    return ", ".join(one(k, v) for k, v in need.items()) or "nothing"
