from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from spinegpt.train import curriculum, plan
from spinegpt.train.curriculum import CurriculumError

from ..conftest import CURRICULA


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """\
    name: t
    model: builtin:tiny-qwen2_5_vl
    stages:
      - name: one
        data: [{smoke: stage1}]
        learning_rate: 1.0e-5
        max_length: 512
        deepspeed: zero2
      - name: two
        data: [{smoke: stage2}]
        learning_rate: 1.0e-6
        max_length: 1024
        deepspeed: zero3_offload
"""


def issues(path: Path, *overrides: str) -> dict[str, str]:
    with pytest.raises(CurriculumError) as info:
        plan.load(path, overrides)
    return {issue.path: issue.message for issue in info.value.issues}


def test_shipped_curricula_validate() -> None:
    for path in curriculum.iter_curricula(CURRICULA):
        loaded = plan.load(path)
        assert loaded.curriculum.stages, path


def test_good_minimal(tmp_path: Path) -> None:
    loaded = plan.load(write(tmp_path, GOOD))
    one, two = loaded.curriculum.stages
    assert (one.name, one.learning_rate, one.max_length, one.tuner_type) == ("one", 1e-5, 512, "full")
    assert two.deepspeed == "zero3_offload"
    assert one.freeze_vit and one.freeze_aligner and not one.freeze_llm  # ms-swift's defaults


def test_all_errors_reported_at_once_with_paths_and_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: t
        model: builtin:tiny-qwen2_5_vl
        colour: blue
        stages:
          - name: one
            data: [{smoke: stage1}]
            learning_rate: -1.0e-5
            max_length: 512
            deepspeed: zero9
          - name: two
            learning_rate: fast
            max_length: 1024
            tuner_type: qlora
        """,
    )
    with pytest.raises(CurriculumError) as info:
        plan.load(path)
    found = {i.path: i for i in info.value.issues}
    assert set(found) == {
        "colour",
        "stages[0].learning_rate",
        "stages[0].deepspeed",
        "stages[1].data",
        "stages[1].learning_rate",
        "stages[1].tuner_type",
    }
    assert found["colour"].message == "unknown key"
    assert found["stages[0].learning_rate"].message == "must be > 0"
    assert "zero9" in found["stages[0].deepspeed"].message and "zero2" in found["stages[0].deepspeed"].message
    assert found["stages[1].data"].message == "required"
    assert found["stages[0].learning_rate"].line == 7
    assert found["colour"].line == 3
    text = str(info.value)
    assert str(path) in text and "6 error(s)" in text
    assert f"{path}:7: stages[0].learning_rate: must be > 0" in text


ONE_STAGE = "stages:\n  - name: a\n    data: [{smoke: stage1}]\n    learning_rate: 1.0e-5\n    max_length: 8\n"


def with_stage(**lines: str) -> str:
    """A valid one-stage body with stage keys replaced or added (values as YAML text)."""
    body = ONE_STAGE
    for key, value in lines.items():
        if f"    {key}: " in body:
            body = re.sub(rf"    {key}: .*\n", f"    {key}: {value}\n", body)
        else:
            body += f"    {key}: {value}\n"
    return body


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ("stages: []\n", "stages", "must not be empty"),
        (with_stage(data="[]"), "stages[0].data", "must not be empty"),
        (with_stage(data="[{jsonl: nope.jsonl}]"), "stages[0].data[0].jsonl", "no such file"),
        (with_stage(data="[{jsonl: x.jsonl, smoke: stage1}]"), "stages[0].data[0]", "exactly one"),
        (with_stage(max_length="0"), "stages[0].max_length", "must be > 0"),
        (with_stage(engine_args="{output_dir: /tmp/x}"), "stages[0].engine_args", "set by spinegpt"),
        (ONE_STAGE + ONE_STAGE.removeprefix("stages:\n"), "", "unique"),
        (with_stage(lora_rank="16"), "stages[0]", "tuner_type: lora"),
        (with_stage(warmup_ratio="1.5"), "stages[0].warmup_ratio", "must be < 1"),
        (with_stage(deepspeed="missing/ds.json"), "stages[0].deepspeed", "not found"),
        (with_stage(freeze_llm="true"), "stages[0]", "nothing would train"),
    ],
)
def test_bad_curricula(tmp_path: Path, body: str, path: str, message: str) -> None:
    (tmp_path / "x.jsonl").write_text("")
    file = write(tmp_path, "name: t\nmodel: m\n" + body)
    found = issues(file)
    assert path in found, found
    assert message in found[path]


def test_engine_args_names_both_problems(tmp_path: Path) -> None:
    body = with_stage(engine_args="{output_dir: /tmp/x, learning_rate: 3, lora_dropout: 0.1}")
    message = issues(write(tmp_path, "name: t\nmodel: m\n" + body))["stages[0].engine_args"]
    assert "'output_dir' is set by spinegpt" in message and "'learning_rate' is a stage key" in message
    assert "lora_dropout" not in message


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nstages: [\n  - a: b\n")
    with pytest.raises(CurriculumError) as info:
        plan.load(path)
    assert "invalid YAML" in str(info.value) and info.value.issues[0].line is not None


def test_overrides_by_name_and_index(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    loaded = plan.load(path, ["stages.two.max_steps=4", "stages[0].learning_rate=3e-5", "seed=7"])
    assert loaded.curriculum.stage("two").max_steps == 4
    assert loaded.curriculum.stages[0].learning_rate == 3e-5
    assert loaded.curriculum.seed == 7
    found = issues(path, "stages.three.max_steps=1", "stages[0].learning_rate=-1")
    assert "stages.three.max_steps" in found and found["stages[0].learning_rate"] == "must be > 0"


def test_extends_merges_stages_by_name(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nname: child\nstages:\n  - name: two\n    max_steps: 2\n", "child.yaml")
    loaded = plan.load(child)
    assert loaded.curriculum.name == "child"
    assert [s.name for s in loaded.curriculum.stages] == ["one", "two"]
    assert loaded.curriculum.stage("two").max_steps == 2
    assert loaded.curriculum.stage("two").learning_rate == 1e-6  # inherited
    bad = write(tmp_path, "extends: base.yaml\nstages:\n  - name: three\n    max_steps: 2\n", "bad.yaml")
    assert "stages[0].name" in issues(bad)


def test_extends_cycle(tmp_path: Path) -> None:
    write(tmp_path, "extends: b.yaml\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    assert "circular" in issues(tmp_path / "a.yaml")["extends"]


def test_paper_curriculum_matches_table5() -> None:
    c = plan.load(CURRICULA / "spinegpt.yaml").curriculum
    assert c.model == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert [s.learning_rate for s in c.stages] == [1e-5, 1e-5, 1e-6]
    assert [s.max_length for s in c.stages] == [16384, 16384, 49152]
    assert [s.deepspeed for s in c.stages] == ["zero2", "zero2", "zero3_offload"]
    assert all(s.num_train_epochs == 1 and s.max_steps is None and s.tuner_type == "full" for s in c.stages)
    assert [s.data[0].label() for s in c.stages] == ["mix:stage1_foundation", "mix:stage2_spine", "mix:stage3_reports"]


def test_smoke_is_the_paper_curriculum_shrunk() -> None:
    paper = plan.load(CURRICULA / "spinegpt.yaml").curriculum
    smoke = plan.load(CURRICULA / "smoke.yaml").curriculum
    assert [s.name for s in smoke.stages] == [s.name for s in paper.stages]
    assert [s.deepspeed for s in smoke.stages] == [s.deepspeed for s in paper.stages]
    assert all(s.max_steps and s.max_steps <= 5 for s in smoke.stages)


def test_every_yaml_opens_with_the_command_that_runs_it() -> None:
    for path in curriculum.iter_curricula(CURRICULA):
        head = path.read_text().splitlines()[:8]
        assert head[0].startswith("#"), path
        assert any("spinegpt run" in line or "spinegpt sweep" in line for line in head), path


def test_errors_in_an_extends_chain_point_at_the_file_that_says_it(tmp_path: Path) -> None:
    write(tmp_path, GOOD.replace("learning_rate: 1.0e-6", "learning_rate: -1.0e-6"), "base.yaml")
    child = write(
        tmp_path,
        "extends: base.yaml\nname: child\nstages:\n"
        "  - name: two\n    max_steps: 2\n"
        "  - name: one\n    max_length: -4\n",
        "child.yaml",
    )
    with pytest.raises(CurriculumError) as info:
        plan.load(child)
    found = {i.path: i for i in info.value.issues}
    # stages[0] of the merged curriculum is `one`: the second stage entry in child.yaml, line 7.
    assert (found["stages[0].max_length"].file, found["stages[0].max_length"].line) == (tmp_path / "child.yaml", 7)
    # the bad learning rate of `two` is inherited: base.yaml, line 11.
    assert (found["stages[1].learning_rate"].file, found["stages[1].learning_rate"].line) == (
        tmp_path / "base.yaml",
        11,
    )


def test_eval_section_global_and_per_stage(tmp_path: Path) -> None:
    (tmp_path / "sb.jsonl").write_text("")
    text = textwrap.dedent(GOOD) + (
        "eval:\n  benchmarks:\n    - {kind: spinebench, path: sb.jsonl}\n"
        "  judge: {base_url: 'http://127.0.0.1:8000/v1', model: judge}\n"
    )
    loaded = plan.load(write(tmp_path, text), ["stages.two.eval=false"])
    c = loaded.curriculum
    one, two = c.stages
    spec = c.eval_for(one)
    assert spec is not None and spec.benchmarks[0].label == "spinebench"
    assert c.eval_for(two) is None
    found = issues(
        write(
            tmp_path,
            textwrap.dedent(GOOD)
            + "eval:\n  benchmarks:\n    - {kind: pubmedqa, path: nope.jsonl}\n    - {kind: spinebench}\n",
        ),
    )
    assert "eval.benchmarks[0].kind" in found and "eval.benchmarks[0].path" in found
    assert found["eval.benchmarks[1].path"] == "required"


def test_engine_args_through_dashes_are_the_engines_own_names(tmp_path: Path) -> None:
    """`--max-steps` reaches the engine as `max_steps`: the reserved and stage-key checks see through the dash, and a
    name the engine does not know is refused instead of failing at engine start."""
    body = with_stage(engine_args="{learning-rate: 0.5, max-steps: 2, output-dir: /tmp/x, lora-dropuot: 0.1}")
    message = issues(write(tmp_path, "name: t\nmodel: m\n" + body))["stages[0].engine_args"]
    assert "'output-dir' is set by spinegpt" in message
    assert "'learning-rate' is a stage key" in message and "'max-steps' is a stage key" in message
    assert "'lora-dropuot' is not an argument of the engine" in message and "lora_dropout" in message
    loaded = plan.load(write(tmp_path, "name: t\nmodel: m\n" + with_stage(engine_args="{lora-dropout: 0.1}")))
    assert loaded.curriculum.stages[0].engine_args == {"lora_dropout": 0.1}


def test_a_damaged_engine_argument_cache_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The cached list of ms-swift's arguments is checked as a fresh one; a damaged one never makes the shipped
    curricula invalid."""
    import importlib.metadata
    import json

    from spinegpt.train import swift_adapter

    monkeypatch.setenv("SPINEGPT_CACHE", str(tmp_path / "cache"))
    fresh = swift_adapter.engine_argument_names()
    assert fresh is not None and "lora_dropout" in fresh
    cache = tmp_path / "cache" / f"ms-swift-{importlib.metadata.version('ms-swift')}-sft-arguments.json"
    for damaged in (json.dumps(["model", "dataset"]), json.dumps({"a": 1}), json.dumps([1, 2]), '["mod'):
        cache.write_text(damaged)
        caplog.clear()
        assert swift_adapter.engine_argument_names() == fresh
        assert "discarded and read from ms-swift again" in caplog.text
        assert json.loads(cache.read_text()) == sorted(fresh)  # rewritten whole
    cache.write_text(json.dumps(sorted(swift_adapter.MANAGED_ARGS)))  # everything spinegpt sets, lora_dropout lost
    assert plan.load(CURRICULA / "spinegpt.yaml").curriculum.stages


def test_duplicate_yaml_keys_are_an_error_with_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nmodel: m\nseed: 1\nseed: 2\n" + ONE_STAGE)
    with pytest.raises(CurriculumError) as info:
        plan.load(path)
    (issue,) = info.value.issues
    assert issue.line == 4 and "duplicate key 'seed' (first on line 3)" in issue.message


def test_invalid_deepspeed_json_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "ds.json").write_text('{"zero_optimization": {"stage": 2,}}')
    message = issues(write(tmp_path, "name: t\nmodel: m\n" + with_stage(deepspeed="ds.json")))["stages[0].deepspeed"]
    assert "ds.json:1: invalid JSON" in message


def test_a_stage_named_twice_in_an_extending_file_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "base.yaml")
    child = write(
        tmp_path,
        "extends: base.yaml\nstages:\n  - {name: two, max_steps: 2}\n  - {name: two, max_steps: 3}\n",
        "child.yaml",
    )
    with pytest.raises(CurriculumError, match="'two' appears twice"):
        plan.load(child)


def test_an_overridden_value_is_not_blamed_on_a_line_of_the_file(tmp_path: Path) -> None:
    """The YAML line of `learning_rate` holds 1e-5; the bad value came from the command line."""
    with pytest.raises(CurriculumError) as info:
        plan.load(write(tmp_path, GOOD), ["stages[0].learning_rate=-1"])
    (issue,) = info.value.issues
    assert issue.path == "stages[0].learning_rate" and issue.line is None and issue.file is None


# -- small inputs, large costs (issue 23): the loader bounds what it accepts -----------------------------------------


_ISSUES = """
import json, sys
from pathlib import Path
from spinegpt.train import plan
from spinegpt.train.curriculum import CurriculumError
try:
    plan.load(Path(sys.argv[1]))
except CurriculumError as exc:
    print(json.dumps({issue.path: issue.message for issue in exc.issues}))
"""


def _bounded(path: Path, timeout: float = 30.0) -> dict[str, str]:
    """``issues(path)`` in a child process given ``timeout`` seconds: a loader that never returns (or eats the
    machine's memory) fails the test instead of hanging the suite."""
    import json
    import subprocess
    import sys

    try:
        done = subprocess.run(
            [sys.executable, "-c", _ISSUES, str(path)], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {path} did not return within {timeout:.0f}s")
    assert done.returncode == 0 and done.stdout.strip(), done.stderr[-2000:]
    return dict(json.loads(done.stdout))


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    layers = ["  A0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    layers += [f"  A{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    bomb = write(tmp_path, textwrap.dedent(GOOD) + "env:\n" + "\n".join(layers) + "\n")  # 10^9 strings expanded
    assert bomb.stat().st_size < 1024
    found = _bounded(bomb)
    assert "aliases" in found[""] and "expand" in found[""], found


def test_deep_nesting_is_a_config_error_not_a_recursion_error(tmp_path: Path) -> None:
    deep = write(tmp_path, textwrap.dedent(GOOD) + "env: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested" in _bounded(deep)[""]


def test_depth_reached_through_aliases_counts(tmp_path: Path) -> None:
    """Each anchor is shallow where it is written; reached through 50 aliases the value is 3,000 levels deep."""
    layers = ["  - &d0 " + "[" * 60 + "x" + "]" * 60]
    layers += [f"  - &d{n} " + "[" * 60 + f"*d{n - 1}" + "]" * 60 for n in range(1, 50)]
    deep = write(tmp_path, textwrap.dedent(GOOD) + "engine_args:\n  deep:\n" + "\n".join(layers) + "\n")
    assert deep.stat().st_size < 16 * 1024
    found = _bounded(deep)
    assert "nested" in found.get("", ""), found


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "huge"])
def test_extends_reads_regular_files_of_a_bounded_size(tmp_path: Path, target: str) -> None:
    import os

    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")  # opening it for reading would block until a writer came
        target = str(tmp_path / "fifo")
    elif target == "huge":
        (tmp_path / "huge.yaml").write_text("name: t\n# " + "x" * (2 << 20) + "\n")
        target = str(tmp_path / "huge.yaml")
    child = write(tmp_path, f"extends: {target}\nname: child\n", "child.yaml")
    found = _bounded(child)
    message = " ".join(found.values())
    assert ("not a regular file" in message) or ("MiB" in message and "larger than" in message), found


def test_env_values_are_scalars(tmp_path: Path) -> None:
    base = textwrap.dedent(GOOD)
    found = issues(write(tmp_path, base + "env:\n  NCCL_DEBUG: [INFO]\n  MAX_PIXELS: {a: 1}\n  EMPTY:\n"))
    assert "must be a string, a number or true/false" in found["env.NCCL_DEBUG"], found
    assert "env.MAX_PIXELS" in found and "env.EMPTY" in found
    ok = write(tmp_path, base + "env:\n  MAX_PIXELS: 1003520\n  TOKENIZERS_PARALLELISM: false\n", "ok.yaml")
    fine = plan.load(ok)
    assert fine.curriculum.env == {"MAX_PIXELS": "1003520", "TOKENIZERS_PARALLELISM": "false"}
