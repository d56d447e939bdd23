"""Multiple-choice audio question answering, shared by MMAR and MMAU: prompt, target, answer extraction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from audio_recipes.errors import DataError
from audio_recipes.io import read_jsonl, read_text
from audio_recipes.metrics.choice import LETTERS, answer_text, extract_choice, score_choices
from audio_recipes.tasks.base import Example, Task, check_audio_files, rows_by_id

SYSTEM_PROMPT = "You are an expert in audio understanding and reasoning."
INSTRUCTION = "Answer with the letter and the text of the correct choice inside <answer></answer>."
# Fields an item may carry that must never reach a prompt or a target (MMAR's reasoning annotations)
HIDDEN_FIELDS = ("thinking", "cue", "rubric")


def choice_prompt(question: str, choices: list[str]) -> str:
    lines = [question.strip(), ""] + [f"({LETTERS[i]}) {choice}" for i, choice in enumerate(choices)]
    return "\n".join(lines + ["", INSTRUCTION])


def choice_target(choices: list[str], answer: str) -> str:
    index = choices.index(answer)
    return f"<answer>({LETTERS[index]}) {answer}</answer>"


class MultipleChoiceTask(Task):
    """Items with `id, question, choices, answer` and an audio path; scored by the benchmarks' string match."""

    audio_field: ClassVar[str]
    prediction_field: ClassVar[str]  # the key the benchmark's own script reads
    group_fields: ClassVar[tuple[str, ...]]
    default_system_prompt = SYSTEM_PROMPT
    prediction_key = "id"
    input_modes = ("audio", "text")  # text: the question and choices without the audio (a no-audio baseline)

    def read_items(self, path: Path) -> list[dict[str, Any]]:
        return read_rows(path)

    def check_fields(self, item: dict[str, Any], fields: tuple[str, ...], where: str) -> None:
        missing = [key for key in fields if key not in item]
        if missing:
            raise DataError(f"{where}: lacks {', '.join(missing)} (a {self.name} item has {', '.join(fields)})")

    def load_examples(self, split: str) -> list[Example]:
        path = self.data_file(split)
        if path is None:
            raise DataError(f"task {self.name}: the recipe sets no {split}_file")
        audio_dir = Path(self.args.audio_dir) if self.args.audio_dir else None
        if self.args.input_mode != "text" and audio_dir is None:
            raise DataError(f"task {self.name} needs audio_dir (the folder the metadata's audio paths start from)")
        examples = []
        for index, item in enumerate(self.read_items(Path(path))):
            where = f"{path}, item {index} (id {item.get('id')})"
            self.check_fields(item, ("id", "question", "choices", "answer", self.audio_field), where)
            if item["answer"] not in item["choices"]:
                raise DataError(f"{where}: answer {item['answer']!r} is not one of its choices {item['choices']}")
            reference = {key: value for key, value in item.items() if key not in HIDDEN_FIELDS}
            audio = None if self.args.input_mode == "text" else str(audio_dir / item[self.audio_field])
            examples.append(Example(
                id=str(item["id"]), audio=audio, system=self.system_prompt,
                prompt=choice_prompt(item["question"], item["choices"]),
                completion=choice_target(item["choices"], item["answer"]), reference=json.dumps(reference),
            ))
        check_audio_files(examples, path, self.args)
        return examples


    def parse(self, text: str) -> dict[str, Any]:
        """The raw answer text; the choice is extracted against the item's choices in parse_for_item and
        official_prediction."""
        return {"answer_text": answer_text(text), "valid": bool(answer_text(text))}

    def parse_for_item(self, example: Example, text: str) -> dict[str, Any]:
        """Valid only where a choice of the item can be read from the answer (as official_prediction reads it)."""
        prediction = self.parse(text)
        choices = json.loads(example.reference).get("choices")
        if choices is not None:
            prediction["valid"] = extract_choice(prediction["answer_text"], choices) is not None
        return prediction

    def official_prediction(self, example: Example, prediction: dict[str, Any]) -> dict[str, Any]:
        """The extracted choice's text (so a letter-only answer is not lost), else the answer text as given."""
        item = json.loads(example.reference)
        index = extract_choice(prediction["answer_text"], item["choices"])
        answer = item["choices"][index] if index is not None else prediction["answer_text"]
        return {"id": example.id, self.prediction_field: answer}

    def score(self, examples: list[Example], predictions: dict[str, dict], skip_missing: bool = False) -> dict:
        items = [json.loads(example.reference) for example in examples]
        answers = {key: row.get(self.prediction_field) for key, row in predictions.items()}
        return score_choices(items, answers, group_fields=self.group_fields, skip_missing=skip_missing)

    def score_files(self, gold_path: Path, predictions_path: Path, skip_missing: bool = False) -> dict:
        items = self.read_items(Path(gold_path))
        for index, item in enumerate(items):  # another task's gold file is an error, not a KeyError
            self.check_fields(item, ("id", "choices", "answer"), f"{gold_path}, item {index} (id {item.get('id')})")
        rows, num_duplicates = rows_by_id(read_rows(Path(predictions_path)))
        answers = {item_id: self.prediction_of(row) for item_id, row in rows.items()}
        metrics = score_choices(items, answers, group_fields=self.group_fields, skip_missing=skip_missing)
        # The official scripts score every row (a repeated one twice); this figure scores each gold item once
        metrics["num_duplicates"] = num_duplicates
        return metrics

    def prediction_of(self, row: dict[str, Any]) -> Any:
        return row.get(self.prediction_field)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """A JSON list (as the benchmarks' scripts read) or JSON lines."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from error
        if not all(isinstance(row, dict) for row in rows):
            raise DataError(f"{path}: expected a JSON list of objects")
        return rows
    return read_jsonl(path)
