"""Trackers (sweeper.trackers) and the MLflow export, read back with the trackers' own readers:
TensorBoard's EventAccumulator and MlflowClient. Real stores: event files, a SQLite file, a local
`mlflow server` on 127.0.0.1, and the MLflow UI in headless Chromium."""

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeper.records import find_records, read_record, write_record
from sweeper.runs import run_dir_of
from sweeper.summary import summary_line
from sweeper.train import run_point
from sweeper.train.context import PointContext

REPO = Path(__file__).resolve().parents[1]
SMALL = ("model=tiny_llama", "train.eval_size=32", "train.batch_size=8", "train.max_length=32", "train.log_every=2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # the server and clients the tests start stay offline


def tiny(make_cfg, where, *extra):
    return make_cfg(*SMALL, "train.max_steps=6", f"sweeper.results_dir={where}", *extra)


def metric_lines(record) -> list[dict]:
    path = Path(record["record_path"]).with_name("metrics.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def losses(record) -> list[tuple[int, float]]:
    return [(line["step"], line["loss"]) for line in metric_lines(record) if "loss" in line]


# ---------------------------------------------------------------- TensorBoard
def event_reader(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(Path(run_dir) / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    reader.Reload()
    return reader


def tb_hparams(reader) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = reader.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.number_value if v.HasField("number_value") else v.string_value for k, v in start.hparams.items()}


def assert_tensorboard_matches(record):
    assert record["status"] == "ok", record.get("error")
    assert record["trackers"]["tensorboard"] == "ok"
    reader = event_reader(Path(record["record_path"]).parent)
    series = [(e.step, e.value) for e in reader.Scalars("train/loss")]
    expected = losses(record)
    assert [s for s, _ in series] == [s for s, _ in expected]
    assert [v for _, v in series] == pytest.approx([v for _, v in expected], rel=1e-6)  # float32 events
    lrs = [line["lr"] for line in metric_lines(record) if "lr" in line]
    assert [e.value for e in reader.Scalars("train/lr")] == pytest.approx(lrs, rel=1e-6)
    hparams = tb_hparams(reader)
    assert hparams["dataset"] == record["dataset"] and hparams["method"] == record["method"]
    assert hparams["r"] == record["r"]
    for split in ("validation", "test"):
        value = record["metrics"][split]["accuracy"]
        assert [e.value for e in reader.Scalars(f"{split}/accuracy")] == pytest.approx([value], rel=1e-6)


def test_tensorboard_events_equal_metrics_and_hparams_carry_final_metrics(make_cfg, tmp_path):
    tracked = ["sweeper.trackers=[tensorboard]", "train.eval_every=3"]
    records = [
        run_point(tiny(make_cfg, tmp_path, "method=relora", "method.r=2", "method.merge_every=3", *tracked)),
        run_point(tiny(make_cfg, tmp_path, "method=lora", "method.r=4", *tracked)),
    ]
    for record in records:
        assert_tensorboard_matches(record)
    relora = event_reader(Path(records[0]["record_path"]).parent)
    assert "method/merge/delta_norm" in relora.Tags()["scalars"]  # method events, by step
    validation = [e.step for e in relora.Scalars("eval/validation_score")]
    assert validation == [line["step"] for line in metric_lines(records[0]) if line.get("event") == "validation"]
    # Bookkeeping: the same points without a tracker have the same run ids, and are found done.
    for record, extra in zip(records, (["method=relora", "method.r=2", "method.merge_every=3"], ["method.r=4"])):
        plain = tiny(make_cfg, tmp_path, *extra, "train.eval_every=3")
        assert run_dir_of(plain).name == record["run_id"]
        again = run_point(plain)
        assert again["finished_at"] == record["finished_at"], "a finished point re-ran because a tracker was off"


def test_a_killed_and_resumed_point_has_one_event_per_step(make_cfg, tmp_path):
    """Killed after its step-4 checkpoint with step 5 logged: the resumed point's events, like its
    metrics.jsonl, hold every step once."""
    cfg = tiny(make_cfg, tmp_path, "sweeper.trackers=[tensorboard]", "train.log_every=1", "train.checkpoint_every=2")
    calls = itertools.count()

    def killed_at_step_5() -> bool:
        if next(calls) == 4:  # asked after step 5 was logged; the last checkpoint is step 4's
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        run_point(cfg, PointContext(should_stop=killed_at_step_5))
    record = run_point(cfg)
    assert record["train"]["resumed_from_step"] == 4
    assert [step for step, _ in losses(record)] == [1, 2, 3, 4, 5, 6]
    assert_tensorboard_matches(record)


def test_tensorboard_in_a_packed_job_of_the_local_launcher(tmp_path):
    """sweeper.pack=2 through the launcher: the job path (PointsJob -> run_packed) opens trackers too;
    a tracking server nobody answers on is one line per point in the status, and no failed point."""
    nobody = f"http://127.0.0.1:{free_port()}"
    cmd = [
        sys.executable,
        "-m",
        "sweeper",
        "-m",
        *SMALL,
        "train.max_steps=4",
        "method.r=2,4",
        "hydra/launcher=local",
        "hydra.launcher.workers=1",
        "hydra.launcher.poll_s=0.5",
        "sweeper.chunk=2",
        "sweeper.pack=2",
        "sweeper.trackers=[tensorboard,mlflow]",
        f"sweeper.mlflow_uri={nobody}",
        f"sweeper.results_dir={tmp_path / 'results'}",
        f"hydra.sweep.dir={tmp_path / 'jobs'}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    records = [read_record(p) for p in find_records(tmp_path / "results")]
    assert len(records) == 2
    for record in records:
        record["record_path"] = str(Path(run_dir_of_record(record, tmp_path)) / "record.json")
        assert record["pack"]["size"] == 2, "the two points were not packed"
        assert record["worker"]["job_id"], "the job's context did not reach the record"
        assert_tensorboard_matches(record)
    status = subprocess.run(
        [sys.executable, "-m", "sweeper.status", str(tmp_path / "results")], capture_output=True, text=True, cwd=REPO
    )
    assert "done 2  failed 0" in status.stdout, status.stdout + status.stderr
    assert "tracker errors (the points trained and are recorded; sweeper.trackers): 2" in status.stdout
    assert status.stdout.count(": mlflow: open: ") == 2


def run_dir_of_record(record, tmp_path):
    return tmp_path / "results" / "runs" / record["run_id"]


def test_a_tracker_that_breaks_mid_run_is_switched_off_with_one_line(tmp_path):
    from sweeper.trackers import PointInfo, Sinks, Tracker

    class FullDisk(Tracker):
        name = "full_disk"
        closed = False

        def log(self, line):
            if line["step"] >= 2:
                raise OSError(28, "No space left on device")

        def close(self):
            FullDisk.closed = True

    sinks = Sinks([FullDisk(PointInfo(tmp_path, {}))])
    for step in (1, 2, 3):
        sinks.log({"step": step, "loss": 1.0})
    sinks.finish({"status": "ok"})
    assert sinks.report() == {"full_disk": "log: OSError: [Errno 28] No space left on device"}
    assert FullDisk.closed and not sinks


def test_unknown_tracker_stops_the_launch_in_one_line(tmp_path):
    cmd = [sys.executable, "-m", "sweeper", "-m", *SMALL, "hydra/launcher=local", "sweeper.trackers=[tensorbord]"]
    cmd += [f"sweeper.results_dir={tmp_path / 'results'}", f"hydra.sweep.dir={tmp_path / 'jobs'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 2
    assert "sweeper.trackers: unknown tracker 'tensorbord' (known: mlflow, tensorboard)" in proc.stderr
    assert not find_records(tmp_path / "results")


# ---------------------------------------------------------------- MLflow: export
def export(results, *extra) -> str:
    cmd = [sys.executable, "-m", "sweeper.export", "mlflow", str(results), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def mlflow_runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return [run for exp in client.search_experiments() for run in client.search_runs([exp.experiment_id])]


def assert_run_holds(client, run, record):
    assert run.info.run_name == record["run_id"]
    tags = run.data.tags
    for key in ("dataset", "family", "task", "model", "method", "sweep", "run_id", "status"):
        assert tags[key] == str(record[key]), key
    assert run.data.params["method.r"] == str(record["config"]["method"]["r"])
    assert run.data.params["train.lr"] == str(record["config"]["train"]["lr"])
    if record["status"] != "ok":
        assert run.info.status == "FAILED" and tags["error"] == record["error"]
        return
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == losses(record)
    assert run.data.metrics["test/accuracy"] == pytest.approx(record["metrics"]["test"]["accuracy"])
    assert run.data.metrics["validation/accuracy"] == pytest.approx(record["metrics"]["validation"]["accuracy"])


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    """Two ok points and one failed one (a train.batch_size out of range), records on disk."""
    from sweeper.config import compose

    where = tmp_path_factory.mktemp("sweep") / "results"
    cfgs = [compose(*SMALL, "train.max_steps=4", f"method.r={r}", f"sweeper.results_dir={where}") for r in (2, 4)] + [
        compose(*SMALL, "train.batch_size=0", f"sweeper.results_dir={where}")
    ]
    records = [run_point(cfg) for cfg in cfgs]
    assert [r["status"] for r in records] == ["ok", "ok", "failed"]
    return where, records


def test_export_to_sqlite_is_complete_and_idempotent(small_sweep):
    from mlflow.tracking import MlflowClient

    results, records = small_sweep
    out = export(results)
    assert "3 new, 0 updated, 0 unchanged" in out
    uri = f"sqlite:///{results.absolute() / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    runs = {run.info.run_name: run for run in mlflow_runs(uri)}
    assert sorted(runs) == sorted(r["run_id"] for r in records)
    for record in records:
        assert_run_holds(client, runs[record["run_id"]], record)
        artifacts = [a.path for a in client.list_artifacts(runs[record["run_id"]].info.run_id)]
        assert artifacts == ["record.json"]
    assert len(find_records(results)) == 3, "the export's record.json copies must not count as records"
    # Again: nothing new; a record that changed (a retried failure) replaces its run, never duplicates it.
    assert "0 new, 0 updated, 3 unchanged" in export(results)
    failed = next(r for r in records if r["status"] == "failed")
    run_dir = Path(failed["record_path"]).parent
    write_record(run_dir, {**read_record(run_dir / "record.json"), "finished_at": "2026-12-07T10:00:00+00:00"})
    assert "0 new, 1 updated, 2 unchanged" in export(results)
    assert sorted(run.info.run_name for run in mlflow_runs(uri)) == sorted(r["run_id"] for r in records)


# ---------------------------------------------------------------- MLflow: live, and the UI in a browser
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 90) -> None:
    import urllib.request

    deadline = time.time() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    store = f"sqlite:///{tmp_path / 'server.db'}"
    cmd = [mlflow, "server", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1", "--default-artifact-root", str(tmp_path / "artifacts")]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_live_mlflow_run_against_a_local_server(make_cfg, tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    record = run_point(tiny(make_cfg, tmp_path, "sweeper.trackers=[mlflow]", f"sweeper.mlflow_uri={mlflow_server}"))
    assert record["status"] == "ok" and record["trackers"] == {"mlflow": "ok"}
    record["config"] = read_record(record["record_path"])["config"]
    runs = mlflow_runs(mlflow_server)
    assert len(runs) == 1
    assert_run_holds(MlflowClient(tracking_uri=mlflow_server), runs[0], record)
    # A failed point, retried (sweeper.retry_failed): its FAILED run is replaced, not duplicated.
    live = ["sweeper.trackers=[mlflow]", f"sweeper.mlflow_uri={mlflow_server}", "train.batch_size=0"]
    failed = [run_point(tiny(make_cfg, tmp_path, *live, "sweeper.retry_failed=true")) for _ in range(2)]
    assert [r["status"] for r in failed] == ["failed", "failed"] and failed[1]["trackers"] == {"mlflow": "ok"}
    runs = {run.info.run_name: run for run in mlflow_runs(mlflow_server)}
    assert sorted(runs) == sorted([record["run_id"], failed[1]["run_id"]])
    assert runs[failed[1]["run_id"]].info.status == "FAILED"
    assert runs[failed[1]["run_id"]].data.tags["error"] == failed[1]["error"]


def test_unreachable_tracking_server_is_one_line_never_a_failed_point(make_cfg, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    record = run_point(tiny(make_cfg, tmp_path, "sweeper.trackers=[mlflow,tensorboard]", f"sweeper.mlflow_uri={uri}"))
    assert record["status"] == "ok", record.get("error")
    assert record["trackers"]["tensorboard"] == "ok"
    error = record["trackers"]["mlflow"]
    assert error.startswith("open: ") and "\n" not in error and "127.0.0.1" in error
    assert read_record(record["record_path"])["trackers"] == record["trackers"]
    assert summary_line(record).endswith("(tracker error: mlflow; see the record's `trackers`)")


def test_a_tracker_setting_of_the_wrong_kind_is_the_trackers_error_not_the_points(make_cfg, tmp_path):
    cfg = tiny(make_cfg, tmp_path, "sweeper.trackers=5")  # Hydra's basic launcher: no launch check before it
    record = run_point(cfg)
    assert record["status"] == "ok", record.get("error")
    assert record["trackers"] == {"sweeper.trackers": "open: TypeError: 'int' object is not iterable"}
    assert run_point(cfg)["finished_at"] == record["finished_at"], "the lock or the record was left behind"


def test_mlflow_ui_in_headless_chromium_lists_the_exported_runs(small_sweep, tmp_path, chromium):
    results, records = small_sweep
    export(results)
    script = REPO / "scripts" / "mlflow_ui_page.sh"
    store = f"sqlite:///{results.absolute() / 'mlflow.db'}"
    proc = subprocess.run(
        ["bash", str(script), store, str(tmp_path / "page.html"), str(tmp_path / "page.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    page = (tmp_path / "page.html").read_text()
    for record in records:
        assert record["run_id"] in page, f"{record['run_id']} not in the rendered runs table"
    assert (tmp_path / "page.png").stat().st_size > 10_000
