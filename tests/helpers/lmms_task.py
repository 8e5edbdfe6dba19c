"""A tiny lmms-eval task over given documents (video, question, options, answer letter), written to a folder."""
from __future__ import annotations

import json
from pathlib import Path

TASK_YAML = """task: tspo_tiny
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 2
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
metadata:
  - version: 0.0
"""

TASK_UTILS = '''
def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"] + "\\n" + "\\n".join(doc["options"]) + "\\nAnswer with the option's letter."


def process_results(doc, results):
    return {"accuracy": float(results[0].strip()[:1] == doc["answer"])}
'''


def write_task(root: Path, docs: list[dict]) -> Path:
    """The documents as root/tiny.jsonl and the task `tspo_tiny` over them in root/task: its include path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tiny.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    task = root / "task"
    task.mkdir(exist_ok=True)
    (task / "tspo_tiny.yaml").write_text(TASK_YAML.format(data=root / "tiny.jsonl"))
    (task / "utils.py").write_text(TASK_UTILS)
    return task
