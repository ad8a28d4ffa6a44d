"""A sequence's ``select: {pick: original}``: each task trains on the template its entry gives (SAPO's baseline),
nothing is scored, the stage records that template; a missing or stray ``template`` is one line."""

import json

import pytest
import yaml
from test_sequence import write_config

from paft_rl.cli import main
from paft_rl.trainers.sft import PaftSFTCollator
from tests.tiny import make_tiny_model_dir

TEMPLATE = "Pick one. {question}\n{options}\nMy pick:"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))


def test_pick_original_trains_on_the_given_template(tmp_path, model_dir, monkeypatch):
    seen = []
    texts = PaftSFTCollator.texts

    def recording(self, rows, step, evaluation=False):
        prompts, completions, template_ids = texts(self, rows, step, evaluation)
        if not evaluation:
            seen.extend(zip(prompts, template_ids))
        return prompts, completions, template_ids

    monkeypatch.setattr(PaftSFTCollator, "texts", recording)
    path = write_config(tmp_path, model_dir, select={"pick": "original"},
                        tasks=[{"task": "synth_mc", "template": TEMPLATE}])
    config = yaml.safe_load(path.read_text())
    config["sft"]["prompt_format"] = "plain"
    path.write_text(yaml.safe_dump(config))
    assert main(["sequence", "--config", str(path)]) == 0
    assert seen and {template for _, template in seen} == {"fixed"}
    assert all(prompt.startswith("Pick one. ") and prompt.endswith("\nMy pick:") for prompt, _ in seen)
    stage = tmp_path / "seq" / "stage_1"
    assert not (stage / "selection").exists()  # nothing was scored
    report = json.loads((tmp_path / "seq" / "sequence.json").read_text())
    assert report["templates"] == ["original"] and len(report["matrix"]) == 1
    assert yaml.safe_load((stage / "recipe.yaml").read_text())["fixed_template"] == TEMPLATE


@pytest.mark.parametrize("select, tasks, message", [
    ({"pick": "original"}, [{"task": "synth_mc"}],
     "seq.yaml.tasks[0].template is required with select pick original"),
    ({"pick": "original"}, [{"task": "synth_mc", "template": TEMPLATE}, {"task": "synth_arith"}],
     "seq.yaml.tasks[1].template is required with select pick original"),
    ({"pick": "lowest"}, [{"task": "synth_mc", "template": TEMPLATE}],
     "seq.yaml.tasks[0].template is the template of select pick original, but pick is lowest"),
    ({"pick": "original"}, [{"task": "synth_mc", "template": "Q: {question}\nAnswer:"}],
     "does not show the answer options"),
])
def test_pick_original_refuses_a_missing_or_stray_template(tmp_path, model_dir, select, tasks, message, capsys):
    path = write_config(tmp_path, model_dir, select=select, tasks=tasks)
    assert main(["sequence", "--config", str(path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "seq").exists()
