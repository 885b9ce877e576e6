"""`sweeper.trackers=[mlflow]`: MLflow, one run per grid point, named by its run id.

Two routes (docs/tracking.md):
- live: with `sweeper.mlflow_uri=http://HOST:PORT` (a tracking server; or MLFLOW_TRACKING_URI), each
  point logs its step series as it trains (one request per `train.log_every` steps, synchronous) and
  its final metrics when it ends. A requeued attempt continues its run; a retried failure replaces
  it. Never point thousands of jobs at one SQLite file: concurrent writers fail with "database is
  locked".
- export: `python -m sweeper.export mlflow RESULTS` (`export_records`), one process ingesting every
  record into one store, a SQLite file beside the results by default. Idempotent: runs are found by
  their `run_id` tag, an unchanged record is left alone, a changed one replaces its run.

Both name a run's params (the point's resolved config, flattened), tags (dataset, family, task,
model, method, sweep, run_id, status, git commit, SLURM job) and metrics (train/loss, train/lr,
eval/..., method/... by step; validation/..., test/... at the end) alike: `run_fields`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from ..records import EXPORT_ARTIFACTS, METRICS_NAME
from .base import Tracker, final_metrics, flat, step_scalars
from .registry import register

TAG_KEYS = ("dataset", "family", "task", "model", "method", "sweep", "run_id", "status")
RUN_STATUS = {"ok": "FINISHED", "failed": "FAILED", "running": "RUNNING"}
MAX_PARAM_CHARS = 500  # MLflow caps a param's value; longer config values are cut with an ellipsis
FINGERPRINT_TAG = "sweeper.record"  # finished_at + status of the exported record: unchanged -> skipped
BATCH = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's log_batch limits


# ---------------------------------------------------------------- what a run holds
RESULT_SECTIONS = ("dataset", "model", "method", "train")  # the sweeper section is bookkeeping (tags say the sweep)


def params_of(record: dict[str, Any]) -> dict[str, str]:
    """The point's resolved result config, flattened (`method.r`, `train.lr`, ...), as MLflow keeps values."""
    config = record.get("config") or {}
    out = {}
    for key, value in flat("", {k: config[k] for k in RESULT_SECTIONS if k in config}):
        text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        out[key] = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 1] + "…"
    return out


def tags_of(record: dict[str, Any]) -> dict[str, str]:
    tags = {key: str(record[key]) for key in TAG_KEYS if record.get(key) is not None}
    worker = record.get("worker") or {}
    if record.get("git_commit"):
        tags["git_commit"] = str(record["git_commit"])
    if worker.get("job_id"):
        tags["slurm_job"] = str(worker["job_id"])
    if record.get("error"):
        tags["error"] = str(record["error"])[:5000]
    if (record.get("train") or {}).get("stopped_at_rung"):
        tags["stopped_at_rung"] = str(record["train"]["stopped_at_rung"])
    return tags


def metric_lines(run_dir: Path) -> Iterator[dict[str, Any]]:
    """metrics.jsonl's lines; a truncated last line (a point still writing) is skipped."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return
    for text in path.read_text().splitlines():
        try:
            yield json.loads(text)
        except json.JSONDecodeError:
            continue


def _ms(iso: str | None, default: int) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000) if iso else default


# ---------------------------------------------------------------- talking to MLflow
def client_for(uri: str):
    # No retries with backoff and a short timeout: an unreachable server costs the point seconds, not minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # Offline by default: MLflow's usage telemetry would report to the internet (a user may set it back).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(client, name: str, artifact_location: str | None = None) -> str:
    """The experiment's id, created when missing (another process may create it at the same time)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:  # experimentKind: the UI opens on its runs table (MLflow 3 otherwise shows its GenAI pages)
        return client.create_experiment(
            name, artifact_location, tags={"mlflow.experimentKind": "custom_model_development"}
        )
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def runs_by_id(client, experiment: str, run_id: str | None = None) -> dict[str, Any]:
    """{sweeper run id: MLflow run} of the experiment's active runs (one run id's only, if given)."""
    query = f"tags.run_id = '{run_id}'" if run_id else ""
    found, token = {}, None
    while True:
        page = client.search_runs([experiment], query, max_results=5000, page_token=token)
        for run in page:
            found.setdefault(run.data.tags.get("run_id"), run)
        token = page.token
        if not token:
            return found


def log_batches(client, mlflow_run: str, metrics=(), params=(), tags=()) -> None:
    from mlflow.entities import Metric, Param, RunTag

    metrics = [Metric(k, v, t, s) for k, v, t, s in metrics]
    params = [Param(k, v) for k, v in params]
    tags = [RunTag(k, v) for k, v in tags]
    for kind, items in (("metrics", metrics), ("params", params), ("tags", tags)):
        for i in range(0, len(items), BATCH[kind]):
            client.log_batch(mlflow_run, **{kind: items[i : i + BATCH[kind]]})


def step_metrics(lines: Iterable[dict[str, Any]], timestamp: int) -> list[tuple[str, float, int, int]]:
    return [(tag, value, timestamp, int(line["step"])) for line in lines for tag, value in step_scalars(line)]


def final_metric_rows(record: dict[str, Any], timestamp: int) -> list[tuple[str, float, int, int]]:
    step = int((record.get("train") or {}).get("steps") or 0)
    return [(key, value, timestamp, step) for key, value in final_metrics(record).items()]


# ---------------------------------------------------------------- live
@register
class MLflow(Tracker):
    """Live logging to a tracking server, one run per point (re-used when a requeued point resumes)."""

    name = "mlflow"

    def __init__(self, point):
        super().__init__(point)
        uri = point.options.get("mlflow_uri") or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise ValueError(
                "no tracking server: set sweeper.mlflow_uri=http://HOST:PORT, or export the records "
                "afterwards with `python -m sweeper.export mlflow RESULTS`"
            )
        record = point.record
        self.client = client_for(str(uri))
        name = point.options.get("mlflow_experiment") or record["sweep"]
        experiment = experiment_id(self.client, str(name))
        existing = runs_by_id(self.client, experiment, record["run_id"]).get(record["run_id"])
        self.logged_up_to = 0  # steps a killed attempt of this run already logged (not logged twice)
        if existing is not None and existing.info.status == "RUNNING":  # a requeued attempt resumes it
            self.run = existing.info.run_id
            history = self.client.get_metric_history(self.run, "train/loss")
            self.logged_up_to = max((m.step for m in history), default=0)
        else:
            if existing is not None:  # an attempt that ended (a retried failure): its run is replaced
                self.client.delete_run(existing.info.run_id)
            self.run = self.client.create_run(experiment, run_name=record["run_id"], tags=tags_of(record)).info.run_id
            log_batches(self.client, self.run, params=params_of(record).items())
        self.pending: list[tuple[str, float, int, int]] = []

    def log(self, line: dict[str, Any]) -> None:
        if int(line["step"]) > self.logged_up_to:
            self.pending += step_metrics([line], int(datetime.now().timestamp() * 1000))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        log_batches(self.client, self.run, metrics=pending)

    def finish(self, record: dict[str, Any]) -> None:
        self.flush()
        now = int(datetime.now().timestamp() * 1000)
        log_batches(self.client, self.run, metrics=final_metric_rows(record, now), tags=tags_of(record).items())
        self.client.set_terminated(self.run, RUN_STATUS.get(str(record.get("status")), "KILLED"))

    @classmethod
    def default_store(cls, results: Path) -> str:
        """Where an export goes without --tracking-uri: a SQLite file beside the results."""
        return f"sqlite:///{(Path(results).absolute() / 'mlflow.db')}"

    @classmethod
    def export_records(cls, records: list[tuple[Path, dict[str, Any]]], uri: str, experiment: str | None = None):
        """One MLflow run per record (run folder, record); returns {"new", "updated", "unchanged"} counts."""
        client, counts, experiments, known = client_for(uri), {"new": 0, "updated": 0, "unchanged": 0}, {}, {}
        for run_dir, record in records:
            name = experiment or str(record.get("sweep") or "main")
            if name not in experiments:
                artifacts = (run_dir.parent.parent / EXPORT_ARTIFACTS).absolute().as_uri()
                experiments[name] = experiment_id(client, name, artifacts if uri.startswith("sqlite") else None)
                known[name] = runs_by_id(client, experiments[name])
            old = known[name].get(record["run_id"])
            fingerprint = f"{record.get('finished_at')} {record.get('status')}"
            if old is not None and old.data.tags.get(FINGERPRINT_TAG) == fingerprint:
                counts["unchanged"] += 1
                continue
            if old is not None:  # the point ran again (a retried failure, a promoted rung): its run is replaced
                client.delete_run(old.info.run_id)
            export_one(client, experiments[name], run_dir, record, fingerprint)
            counts["updated" if old is not None else "new"] += 1
        return counts


def export_one(client, experiment: str, run_dir: Path, record: dict[str, Any], fingerprint: str) -> None:
    """One record as one finished (or failed) MLflow run: params, tags, step series, final metrics, record.json."""
    end = _ms(record.get("finished_at"), int(datetime.now().timestamp() * 1000))
    start = _ms(record.get("started_at"), end)
    tags = {**tags_of(record), FINGERPRINT_TAG: fingerprint}
    run = client.create_run(experiment, start_time=start, run_name=record["run_id"], tags=tags).info.run_id
    metrics = step_metrics(metric_lines(run_dir), start) + final_metric_rows(record, end)
    log_batches(client, run, metrics=metrics, params=params_of(record).items())
    record_file = Path(run_dir) / "record.json"
    if record_file.is_file():
        client.log_artifact(run, str(record_file))
    client.set_terminated(run, RUN_STATUS.get(str(record.get("status")), "KILLED"), end_time=end)
