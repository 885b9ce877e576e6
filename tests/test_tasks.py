"""Tasks as registered objects (sweeper.tasks): one home per task, no task-name branch elsewhere,
and run ids that the move left as they were."""

import ast
from pathlib import Path

import pytest

from sweeper import tasks
from sweeper.config import compose
from sweeper.runs import make_run_id

PACKAGE = Path(__file__).resolve().parents[1] / "sweeper"
TASK_PACKAGE = PACKAGE / "tasks"


def task_name_constants(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every string constant equal to a task's name: `task == "lm"`, a dict keyed by
    task names, a default of "classification" are each a branch on the task outside its home."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in tasks.names():
            found.append((node.lineno, node.value))
    return found


def test_the_finder_sees_a_comparison_and_a_lookup(tmp_path):
    branchy = tmp_path / "branchy.py"
    branchy.write_text('if task == "generation":\n    pass\nPRIMARY = {"lm": "perplexity"}\n')
    assert task_name_constants(branchy) == [(1, "generation"), (3, "lm")]


def test_no_task_name_outside_the_task_modules():
    offenders = {
        f"{path.relative_to(PACKAGE)}:{line}": name
        for path in PACKAGE.rglob("*.py")
        if TASK_PACKAGE not in path.parents
        for line, name in task_name_constants(path)
    }
    assert not offenders, f"ask the point's task (sweeper.tasks) instead: {offenders}"


def test_registry_names_every_task_once_and_refuses_a_second():
    assert tasks.names() == ["classification", "generation", "lm", "multilabel"]
    assert [t.name for t in tasks.all_tasks()] == ["classification", "lm", "generation", "multilabel"]
    with pytest.raises(ValueError, match="registered twice"):

        @tasks.register
        class Again(tasks.Task):
            name = "lm"

    with pytest.raises(tasks.TaskError, match="task must be one of classification, generation, lm, multilabel"):
        tasks.get("regression")


def test_each_task_states_its_headline_metric():
    facts = {t.name: (t.primary, t.higher_is_better, t.early_stop_metric) for t in tasks.all_tasks()}
    assert facts == {
        "classification": ("accuracy", True, "accuracy"),
        "lm": ("perplexity", False, "loss"),
        "generation": ("chrf", True, "chrf"),
        "multilabel": ("micro_f1", True, "micro_f1"),
    }


# A grid that mixes the three tasks that were string branches before sweeper.tasks; its run ids as
# they were computed before the move (a changed identity would re-run every finished point).
# A new package version changes every run id on purpose: re-pin them then.
PINNED_RUN_IDS = {
    ("dataset=fortune_topic", "model=tiny_llama", "method=lora"): "fortune_topic-tiny_llama-lora-r8-s0-9366c28d8b",
    ("dataset=fortune_topic", "model=lstm", "method=full"): "fortune_topic-lstm-full-s0-e754cadc74",
    ("dataset=fortune_topic", "model=tiny_llama", "method=tfidf"): "fortune_topic-none-tfidf-s0-9013949590",
    ("dataset=austen_lm", "model=tiny_llama", "method=lora"): "austen_lm-tiny_llama-lora-r8-s0-7270f2d986",
    ("dataset=austen_lm", "model=tiny_mistral", "method=relora"): "austen_lm-tiny_mistral-relora-r8-s0-522b6ffd78",
    ("dataset=gettext_en_to_de", "model=tiny_t5", "method=lora"): "gettext_en_to_de-tiny_t5-lora-r8-s0-a4dde10295",
    ("dataset=gettext_en_to_de", "model=tiny_llama", "method=full"): "gettext_en_to_de-tiny_llama-full-s0-f0625231c5",
    ("dataset=wordnet_define_noun", "model=tiny_t5", "method=lora", "method.r=8"): (
        "wordnet_define_noun-tiny_t5-lora-r8-s0-2aae658395"
    ),
}


@pytest.mark.parametrize("overrides", list(PINNED_RUN_IDS))
def test_run_ids_of_a_mixed_task_grid_are_pinned(overrides, tmp_path):
    cfg = compose(f"sweeper.results_dir={tmp_path}", *overrides)
    assert make_run_id(cfg) == PINNED_RUN_IDS[overrides]
