"""Multiple-choice audio question answering, shared by MMAR and MMAU: prompt, target, answer extraction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from audio_recipes.errors import DataError
from audio_recipes.io import read_jsonl_lines, read_text
from audio_recipes.metrics.choice import LETTERS, answer_text, extract_choice, is_empty, score_choice_rows
from audio_recipes.tasks.base import Example, Task, check_unique_keys

SYSTEM_PROMPT = "You are an expert in audio understanding and reasoning."
INSTRUCTION = "Answer with the letter and the text of the correct choice inside <answer></answer>."
# Fields an item may carry that must never reach a prompt or a target (MMAR's reasoning annotations)
HIDDEN_FIELDS = ("thinking", "cue", "rubric")
# Beside the benchmark's own key in a prediction row: the text of the choice our extraction read from the output
EXTRACTED_FIELD = "extracted_choice"


def choice_prompt(question: str, choices: list[str]) -> str:
    lines = [question.strip(), ""] + [f"({LETTERS[i]}) {choice}" for i, choice in enumerate(choices)]
    return "\n".join(lines + ["", INSTRUCTION])


def choice_target(choices: list[str], answer: str) -> str:
    index = choices.index(answer)
    return f"<answer>({LETTERS[index]}) {answer}</answer>"


class MultipleChoiceTask(Task):
    """Items with `id, question, choices, answer` and an audio path; scored by the benchmarks' string match.

    The prediction file is the benchmark's own input to its script: each item's metadata with the model's raw output
    under the benchmark's key (`prediction_field`), so that the official script runs on it unchanged, plus the choice
    our extraction read (`extracted_choice`). Items whose answers are withheld (a test set scored by the benchmark's
    service) load without targets and are written in the same format, for submission.
    """

    audio_field: ClassVar[str]
    prediction_field: ClassVar[str]  # the key the benchmark's own script reads
    fallback_prediction_fields: ClassVar[tuple[str, ...]] = ()  # other keys the strict figure reads a prediction from
    group_fields: ClassVar[tuple[str, ...]]
    official_group_fields: ClassVar[tuple[str, ...]]  # the breakdowns the official script prints
    default_system_prompt = SYSTEM_PROMPT
    prediction_key = "id"
    input_modes = ("audio", "text")  # text: the question and choices without the audio (a no-audio baseline)
    # A choice whose text repeats is one answer under two letters; MMAU's published test-mini has 27 such items
    repeated_choices_allowed: ClassVar[bool] = False

    def read_items(self, path: Path) -> list[tuple[str, dict[str, Any]]]:
        return read_located_rows(path)

    def check_fields(self, item: dict[str, Any], fields: tuple[str, ...], where: str) -> None:
        missing = [key for key in fields if key not in item]
        if missing:
            raise DataError(f"{where}: lacks {', '.join(missing)} (a {self.name} item has {', '.join(fields)})")

    def check_gold(self, located: list[tuple[str, dict[str, Any]]], source: str | Path,
                   fields: tuple[str, ...]) -> bool:
        """Every item (with where it is in `source`) has `fields`, and an answer among its choices; or no item has
        an answer (answers withheld, as in a benchmark's test set). Returns whether the answers are withheld."""
        hidden = bool(located) and all("choices" in item and "answer" not in item for _, item in located)
        for position, item in located:
            where = f"{source}, {position} (id {item.get('id')})"
            self.check_fields(item, tuple(f for f in fields if not (hidden and f == "answer")), where)
            self.check_choices(item["choices"], where)
            if not hidden and (not isinstance(item["answer"], str) or item["answer"] not in item["choices"]):
                raise DataError(f"{where}: answer {item['answer']!r} is not one of its choices {item['choices']}")
        return hidden

    def check_choices(self, choices: Any, where: str) -> None:
        """Two to ten choices (the letters A-J), each a string; none repeated unless the benchmark repeats them."""
        if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS) \
                or not all(isinstance(choice, str) for choice in choices):
            raise DataError(f"{where}: choices must be a list of 2 to {len(LETTERS)} strings, got {choices!r:.200}")
        repeated = sorted({choice for choice in choices if choices.count(choice) > 1})
        if repeated and not self.repeated_choices_allowed:
            raise DataError(f"{where}: choices {repeated} occur more than once in {choices}; a {self.name} item "
                            "needs distinct choices (the letters would name one answer twice)")

    def load_examples(self, split: str) -> list[Example]:
        path = self.data_file(split)
        if path is None:
            raise DataError(f"task {self.name}: the recipe sets no {split}_file")
        audio_dir = Path(self.args.audio_dir) if self.args.audio_dir else None
        if self.args.input_mode != "text" and audio_dir is None:
            raise DataError(f"task {self.name} needs audio_dir (the folder the metadata's audio paths start from)")
        located = self.read_items(Path(path))
        hidden = self.check_gold(located, path, ("id", "question", "choices", "answer", self.audio_field))
        if hidden and split == "train":
            raise DataError(f"{path}: no item has an answer (a test set whose answers are withheld): nothing to train on")
        examples = []
        for _, item in located:
            reference = {key: value for key, value in item.items() if key not in HIDDEN_FIELDS}
            audio = None if self.args.input_mode == "text" else str(audio_dir / item[self.audio_field])
            examples.append(Example(
                id=str(item["id"]), audio=audio, system=self.system_prompt,
                prompt=choice_prompt(item["question"], item["choices"]),
                completion="" if hidden else choice_target(item["choices"], item["answer"]),
                reference=json.dumps(reference),
            ))
        self.check_audio(examples, path)
        return examples

    def parse(self, text: str) -> dict[str, Any]:
        """The answer text; the choice is extracted against the item's choices in parse_for_item and prediction_row."""
        return {"answer_text": answer_text(text), "valid": bool(answer_text(text))}

    def parse_for_item(self, example: Example, text: str) -> dict[str, Any]:
        """Valid only where a choice of the item can be read from the answer (as prediction_row reads it)."""
        prediction = self.parse(text)
        choices = json.loads(example.reference).get("choices")
        if choices is not None:
            prediction["valid"] = extract_choice(prediction["answer_text"], choices) is not None
        return prediction

    def official_row(self, example: Example, raw_output: str, answer_text: str) -> dict[str, Any]:
        item = json.loads(example.reference)
        index = extract_choice(answer_text, item["choices"])
        return {**item, self.prediction_field: raw_output,
                EXTRACTED_FIELD: item["choices"][index] if index is not None else None}

    def prediction_row(self, example: Example, output: dict[str, Any]) -> dict[str, Any]:
        """The item's metadata, the raw output under the benchmark's key (what its script scores), our extraction."""
        return self.official_row(example, output["raw_output"], output["prediction"]["answer_text"])

    def official_prediction(self, example: Example, prediction: dict[str, Any]) -> dict[str, Any]:
        """Without the raw output (a parsed prediction only): its answer text stands in for it."""
        return self.official_row(example, prediction["answer_text"], prediction["answer_text"])

    def score_rows(self, items: list[dict[str, Any]], rows: list[dict[str, Any]], hidden: bool,
                   skip_missing: bool) -> dict:
        if hidden:
            return self.submission_check(items, rows)
        return score_choice_rows(
            items, rows, prediction_key=self.prediction_field, fallback_keys=self.fallback_prediction_fields,
            group_fields=self.group_fields, official_group_fields=self.official_group_fields,
            extraction_key=EXTRACTED_FIELD, skip_missing=skip_missing)

    def submission_check(self, items: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict:
        """Answers withheld: no accuracy here (the benchmark's service scores the file); what the file holds."""
        by_id = {str(row.get("id")): row for row in rows if self.prediction_field in row}
        ids = {str(item["id"]) for item in items}
        return {"answers_withheld": True, "num_gold": len(items), "num_predicted": len(ids & set(by_id)),
                "num_missing": len(ids - set(by_id)),
                "num_empty": sum(is_empty(by_id[i][self.prediction_field]) for i in ids & set(by_id)),
                "num_duplicates": len(rows) - len({str(row.get("id")) for row in rows}),
                "num_unmatched_predictions": len({str(row.get("id")) for row in rows} - ids)}

    def score(self, examples: list[Example], predictions: dict[str, dict], skip_missing: bool = False) -> dict:
        items = [json.loads(example.reference) for example in examples]
        hidden = bool(items) and all("choices" in item and "answer" not in item for item in items)
        return self.score_rows(items, list(predictions.values()), hidden, skip_missing)

    def score_files(self, gold_path: Path, predictions_path: Path, skip_missing: bool = False) -> dict:
        located = self.read_items(Path(gold_path))
        hidden = self.check_gold(located, gold_path, ("id", "choices", "answer"))  # another task's file: an error
        check_unique_keys(((position, str(item["id"])) for position, item in located), gold_path)
        items = [item for _, item in located]
        return self.score_rows(items, read_rows(Path(predictions_path)), hidden, skip_missing)


def read_located_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """A JSON list (as the benchmarks' scripts read) or JSON lines, each row with where it is, as errors name it:
    `item N` of a list, `line N` of JSON lines (both counted from 1, blank lines counted)."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from error
        not_objects = [number for number, row in enumerate(rows, start=1) if not isinstance(row, dict)]
        if not_objects:
            raise DataError(f"{path}, item {not_objects[0]}: expected a JSON list of objects")
        return [(f"item {number}", row) for number, row in enumerate(rows, start=1)]
    return [(f"line {number}", row) for number, row in read_jsonl_lines(path)]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON list or JSON lines file (read_located_rows without their positions)."""
    return [row for _, row in read_located_rows(path)]
