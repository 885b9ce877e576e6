"""Bad input, one case at a time: each gets a one-line error naming the culprit, recorded in that
point's record; nothing already written is touched."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sweeper.config import compose
from sweeper.records import find_records, read_record, write_record
from sweeper.runs import BOOKKEEPING_TRAIN_KEYS, run_dir_of
from sweeper.train import run_point

REPO = Path(__file__).resolve().parents[1]
TINY = ("model=tiny_llama", "train.max_steps=3", "train.eval_size=32", "train.batch_size=8", "train.max_length=32")


def byo(path, **extra):
    return {
        "name": "byo_case",
        "family": "byo",
        "task": "classification",
        "source": "files",
        "path": str(path),
        "text_field": "text",
        "label_field": "label",
        **extra,
    }


def write_csv(path: Path, rows, header="text,label") -> Path:
    path.write_text(header + "\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return path


def good_rows(n=60):
    return [(f"sample number {i} about {'cats' if i % 2 else 'dogs'}", "cat" if i % 2 else "dog") for i in range(n)]


def bad_file(kind: str, tmp: Path) -> dict:
    """A bring-your-own dataset spec whose data is broken in one way."""
    if kind == "missing_label_column":
        return byo(write_csv(tmp / "d.csv", good_rows(), header="text,category"))
    if kind == "missing_text_column":
        return byo(write_csv(tmp / "d.csv", good_rows()), text_field="sentence")
    if kind == "header_only":
        return byo(write_csv(tmp / "d.csv", []))
    if kind == "empty_texts":
        return byo(write_csv(tmp / "d.csv", [("", "cat"), ("", "dog")] * 30))
    if kind == "single_label":
        return byo(write_csv(tmp / "d.csv", [(f"text {i}", "cat") for i in range(60)]))
    if kind == "test_label_unseen":
        train = write_csv(tmp / "train.csv", good_rows())
        test = write_csv(tmp / "test.csv", [(f"bird text {i}", "bird") for i in range(10)])
        spec = byo(train, data_files={"train": str(train), "test": str(test)})
        del spec["path"]
        return spec
    if kind == "not_utf8":
        (tmp / "d.csv").write_bytes(b"text,label\n" + "caf\xe9 au lait,cat\n".encode("latin-1") * 40)
        return byo(tmp / "d.csv")
    if kind == "malformed_jsonl":
        (tmp / "d.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "lab\n')
        return byo(tmp / "d.jsonl")
    if kind == "file_not_found":
        return byo(tmp / "nowhere.csv")
    if kind == "unsupported_type":
        (tmp / "d.py").write_text("import os; os.system('echo pwned')\n")  # must never be executed
        return byo(tmp / "d.py")
    if kind == "unknown_pool":
        return {
            "name": "byo_case",
            "family": "byo",
            "task": "classification",
            "source": "pool",
            "pool": "nope",
            "text_field": "text",
            "label_field": "label",
            "rule": "multiclass",
        }
    if kind == "unknown_task":
        return byo(write_csv(tmp / "d.csv", good_rows()), task="regression")
    raise KeyError(kind)


DATA_CASES = {  # case -> words the one-line error must contain
    "missing_label_column": ["byo_case", "'label'"],
    "missing_text_column": ["byo_case", "'sentence'"],
    "header_only": ["byo_case", "empty"],
    "empty_texts": ["byo_case"],
    "single_label": ["byo_case", "single label"],
    "test_label_unseen": ["byo_case", "bird"],
    "not_utf8": ["byo_case", "UTF-8"],
    "malformed_jsonl": ["byo_case", "d.jsonl"],
    "file_not_found": ["byo_case", "nowhere.csv"],
    "unsupported_type": ["byo_case", ".py"],
    "unknown_pool": ["byo_case", "nope"],
    "unknown_task": ["byo_case", "regression"],
}


@pytest.fixture(scope="module")
def shared_results(tmp_path_factory):
    """One ok record written first: every bad case below must leave it byte for byte intact."""
    from sweeper.config import compose

    root = tmp_path_factory.mktemp("shared")
    cfg = compose(f"sweeper.results_dir={root}", "train.threads=1", "dataset=fortune_computers_vs_rest", *TINY)
    record = run_point(cfg)
    assert record["status"] == "ok", record["error"]
    path = Path(record["record_path"])
    return root, path, path.read_bytes()


def assert_failed_one_line(record, *words):
    assert record["status"] == "failed", record
    assert "\n" not in record["error"] and len(record["error"]) < 600
    for word in words:
        assert word in record["error"], (word, record["error"])
    assert read_record(Path(record["record_path"]))["error"] == record["error"]


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_dataset_file(case, tmp_path, shared_results):
    root, ok_path, ok_bytes = shared_results
    cfg = compose(f"sweeper.results_dir={root}", "train.threads=1", "dataset=fortune_computers_vs_rest", *TINY)
    cfg.dataset = OmegaConf.create(bad_file(case, tmp_path))
    assert_failed_one_line(run_point(cfg), *DATA_CASES[case])
    assert ok_path.read_bytes() == ok_bytes


def test_huge_texts_are_truncated_not_fatal(make_cfg, tmp_path):
    rows = [
        (f"{i} " + ("cats " if i % 2 else "dogs ") * 200_000, "cat" if i % 2 else "dog") for i in range(40)
    ]  # ~1 MB each
    cfg = make_cfg("dataset=fortune_computers_vs_rest", *TINY)
    cfg.dataset = OmegaConf.create(byo(write_csv(tmp_path / "huge.csv", rows)))
    record = run_point(cfg)
    assert record["status"] == "ok", record["error"]


@pytest.mark.parametrize(
    "override, words",
    [
        ("method.r=0", ["method.r", "0"]),
        ("method.r=-3", ["method.r", "-3"]),
        ("method.r=4096", ["method.r=4096", "exceeds"]),
        ("train.lr=0", ["train.lr", "0"]),
        ("train.lr=nan", ["train.lr", "nan"]),
        ("train.lr=-1e-3", ["train.lr"]),
        ("train.lr=1e30", ["non-finite training loss", "train.lr"]),  # diverges: NaN/inf loss mid-run
        ("method.alpha=0", ["method.alpha"]),
        # each train.* / method.* value outside what it may hold: key, value and what is allowed
        ("train.batch_size=-3", ["train.batch_size", "-3", ">= 1"]),
        ("train.batch_size=0", ["train.batch_size", "0", ">= 1"]),
        ("train.dtype=float8", ["train.dtype", "'float8'", "float32, bfloat16"]),
        ("train.warmup_steps=-5", ["train.warmup_steps", "-5", ">= 0"]),
        ("train.max_steps=-1", ["train.max_steps", "-1", ">= 0"]),
        ("train.eval_size=0", ["train.eval_size", "0", ">= 1"]),
        ("train.eval_batch_size=0", ["train.eval_batch_size", "0"]),
        ("train.min_lr_ratio=2", ["train.min_lr_ratio", "[0, 1]"]),
        ("train.max_length=1", ["train.max_length", ">= 2"]),
        ("train.threads=0", ["train.threads", "or null"]),
        ("train.device=gpu", ["train.device", "'gpu'", "cuda:N"]),
        ("train.save_adapter=maybe", ["train.save_adapter", "true, false"]),
        ("train.grad_clip=-1", ["train.grad_clip", "-1"]),
        ("train.log_every=0", ["train.log_every", "0"]),
        ("method.dropout=1.5", ["method.dropout", "1.5", "[0, 1)"]),
        ("method.use_rslora=yes", ["method.use_rslora", "'yes'"]),
        ("method.target_modules=q_proj", ["method.target_modules", "list"]),
        ("model.tokenizer=/no/such/tokenizer", ["model.tokenizer", "/no/such/tokenizer"]),
    ],
)
def test_bad_method_or_train_value(override, words, make_cfg, shared_results):
    root, ok_path, ok_bytes = shared_results
    # A bookkeeping key (log_every, threads, ...) is no part of the run id: with the shared record's
    # other settings the point would be that ok record, skipped. Another seed makes it a new point.
    key = override.split("=")[0].removeprefix("train.")
    seed = ("train.seed=1",) if key in BOOKKEEPING_TRAIN_KEYS else ()
    cfg = make_cfg("dataset=fortune_computers_vs_rest", *TINY, override, *seed, f"sweeper.results_dir={root}")
    assert_failed_one_line(run_point(cfg), *words)
    assert ok_path.read_bytes() == ok_bytes


@pytest.mark.parametrize(
    "args, words",
    [
        (["model=tiny_lama"], ["unknown model 'tiny_lama'", "tiny_llama"]),
        (["method=lroa"], ["unknown method 'lroa'", "lora"]),
        (
            ["dataset=fortune_computer_vs_rest"],
            ["unknown dataset 'fortune_computer_vs_rest'", "fortune_computers_vs_rest"],
        ),
        (["dataset=glob(fortnue_*)"], ["matches no dataset"]),
        (["train.max_step=5"], ["unknown config key 'train.max_step'", "train.max_steps"]),
        (["method.rank=4"], ["unknown config key 'method.rank'"]),
        (["+method.use_dora=true"], ["unknown config key 'method.use_dora'", "+method.config.use_dora=..."]),
    ],
)
def test_command_line_typos_get_one_line(args, words, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper", *args, f"sweeper.results_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    if "unknown config key" not in words[0]:
        [record] = [read_record(p) for p in find_records(tmp_path)]
        assert record["status"] == "failed" and record["error"] == lines[0].removeprefix("[FAILED] ")


def test_a_bad_option_in_a_sweep_fails_alone(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sweeper",
            "-m",
            "model=tiny_llama,tiny_lama",
            "dataset=fortune_computers_vs_rest",
            *TINY[1:],
            "train.threads=1",
            f"sweeper.results_dir={tmp_path}",
            f"hydra.sweep.dir={tmp_path / 'jobs'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    statuses = sorted((r["status"], r.get("model", "?")) for r in map(read_record, find_records(tmp_path)))
    assert statuses == [("failed", "?"), ("ok", "tiny_llama")] or statuses[1] == ("ok", "tiny_llama"), statuses
    assert len(statuses) == 2


def test_unwritable_results_dir_is_reported(make_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    record = run_point(make_cfg("dataset=fortune_computers_vs_rest", *TINY, f"sweeper.results_dir={blocker}/results"))
    assert record["status"] == "failed" and "cannot write record" in record["error"] and "\n" not in record["error"]


def test_disk_full_while_writing_keeps_the_old_record(tmp_path):
    """A size-limited process (RLIMIT_FSIZE: writes past 64 KiB fail with EFBIG) rewriting a record."""
    run_dir = tmp_path / "runs" / "x"
    write_record(run_dir, {"run_id": "x", "status": "ok", "metrics": {"accuracy": 0.9}})
    before = (run_dir / "record.json").read_bytes()
    code = f"""
import resource, signal
from sweeper.records import write_record
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
try:
    write_record({str(run_dir)!r}, {{"run_id": "x", "status": "ok", "blob": "y" * 1_000_000}})
except OSError as e:
    print("OSError", e.errno)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert "OSError 27" in proc.stdout, proc.stdout + proc.stderr  # EFBIG
    assert (run_dir / "record.json").read_bytes() == before
    assert sorted(p.name for p in run_dir.iterdir()) == ["record.json"], "a temp file was left behind"


def test_dataset_name_cannot_escape_results_dir(make_cfg, tmp_path):
    cfg = make_cfg("dataset=fortune_computers_vs_rest", *TINY)
    cfg.dataset.name = "../../../escaped"
    run_dir = run_dir_of(cfg).resolve()
    assert (tmp_path / "results" / "runs") in run_dir.parents
    assert ".." not in run_dir.name


def _write_one(args):
    root, i = args
    write_record(Path(root) / "runs" / "same", {"run_id": "same", "status": "ok", "writer": i, "pad": "z" * 20000})
    write_record(Path(root) / "runs" / f"r{i}", {"run_id": f"r{i}", "status": "ok", "writer": i})


def test_64_concurrent_writers_leave_valid_records(tmp_path):
    with multiprocessing.get_context("fork").Pool(16) as pool:
        pool.map(_write_one, [(str(tmp_path), i) for i in range(64)])
    records = [read_record(p) for p in find_records(tmp_path)]
    assert len(records) == 65  # 64 own records + the one they all raced to write
    assert sorted(r["writer"] for r in records if r["run_id"] != "same") == list(range(64))
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()], "temp files left behind"


def test_trust_remote_code_is_off_by_default():
    for path in (REPO / "conf" / "model").glob("*.yaml"):
        assert OmegaConf.load(path).get("trust_remote_code") is False, path.name


def test_same_config_twice_gives_identical_metrics(make_cfg, tmp_path):
    a = run_point(make_cfg("dataset=fortune_computers_vs_rest", *TINY, f"sweeper.results_dir={tmp_path}/a"))
    b = run_point(make_cfg("dataset=fortune_computers_vs_rest", *TINY, f"sweeper.results_dir={tmp_path}/b"))
    assert a["status"] == b["status"] == "ok"
    assert a["metrics"] == b["metrics"]


def test_a_missing_model_folder_is_named(make_cfg):
    cfg = make_cfg("dataset=fortune_computers_vs_rest", *TINY[1:], "model=minilm", "model.name_or_path=./no/such/model")
    assert_failed_one_line(run_point(cfg), "model.name_or_path", "no/such/model")


def test_a_bad_dtype_keeps_its_own_run_id(make_cfg):
    """train.dtype=float8 used to run float32 under float32's run id: a later correct run was skipped."""
    bad, good = make_cfg(*TINY, "train.dtype=float8"), make_cfg(*TINY, "train.dtype=float32")
    assert run_dir_of(bad) != run_dir_of(good)
    assert run_point(bad)["status"] == "failed"
    assert run_point(good)["status"] == "ok"


def test_dropped_rows_are_counted_in_the_record(make_cfg, tmp_path):
    rows = good_rows() + [("", "cat"), ("   ", "dog"), ("", "dog"), ("no label here", ""), ("blank label", "  ")]
    cfg = make_cfg("dataset=fortune_computers_vs_rest", *TINY)
    cfg.dataset = OmegaConf.create(byo(write_csv(tmp_path / "d.csv", rows)))
    record = run_point(cfg)
    assert record["status"] == "ok", record["error"]
    assert record["data"]["dropped"] == {"empty_text": 3, "blank_label": 2}
    assert read_record(Path(record["record_path"]))["data"]["dropped"] == {"empty_text": 3, "blank_label": 2}


def read_only(folder: Path, argv: list[str]) -> list[str]:
    """argv run with `folder` read-only: chmod for a normal user; for root (whom modes do not stop)
    a private mount namespace where the folder is bind-mounted read-only."""
    if os.geteuid() != 0:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        return argv
    mount = f'mount --bind "{folder}" "{folder}" && mount -o remount,ro,bind "{folder}" "{folder}" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", mount, "sh", *argv]


def test_a_read_only_results_folder_is_one_line_for_every_command(tmp_path):
    results = tmp_path / "results"
    write_record(results / "runs" / "r1", {"run_id": "r1", "status": "ok", "task": "classification", "metrics": {}})
    before = (results / "runs" / "r1" / "record.json").read_bytes()
    commands = {
        "local launcher": [
            sys.executable,
            "-m",
            "sweeper",
            "-m",
            *TINY,
            "hydra/launcher=local",
            f"sweeper.results_dir={results}",
            f"hydra.sweep.dir={tmp_path / 'jobs'}",
        ],  # fmt: skip
        "collect": [sys.executable, "-m", "sweeper.collect", str(results)],
        "report": [sys.executable, "-m", "sweeper.report", str(results)],
    }
    for name, argv in commands.items():
        proc = subprocess.run(read_only(results, argv), capture_output=True, text=True, timeout=300, cwd=REPO)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1, (name, proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and ("Read-only" in errors[0] or "denied" in errors[0]), errors
    assert (results / "runs" / "r1" / "record.json").read_bytes() == before


def test_ctrl_c_of_an_in_process_sweep_is_one_line(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sweeper",
            "-m",
            "dataset=fortune_computers_vs_rest,fortune_art_vs_rest",
            "model=tiny_llama",
            "train.max_steps=100000",
            "train.threads=1",
            f"sweeper.results_dir={tmp_path}",
            f"hydra.sweep.dir={tmp_path / 'jobs'}",
        ],  # fmt: skip
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        # A suite started in the background (`make test &`, nohup) inherits SIGINT ignored, and so would
        # the sweep; a terminal's Ctrl-C always reaches a foreground command: give it the default back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while not list(tmp_path.glob("runs/*/metrics.jsonl")) and time.time() < deadline:  # training has begun
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "interrupted" in stderr.splitlines()[-1]
