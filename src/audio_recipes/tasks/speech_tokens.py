"""Speech tokens: answer a text question with the text answer, then its CosyVoice speech tokens.

Data: JSON lines of chat rows, as `scripts/prepare_data.py speech_tokens` writes them:
`{"id": ..., "messages": [{"role": "user", "content": QUESTION},
{"role": "assistant", "content": "ANSWER\\n<|speech_start|><|s_12|>...<|speech_end|>"}]}` (a system turn may
come first). The model needs the speech vocabulary (`num_speech_tokens` in the recipe).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audio_recipes.errors import DataError
from audio_recipes.io import read_jsonl, read_jsonl_lines
from audio_recipes.metrics.speech_tokens import score_speech_answers
from audio_recipes.models.speech_vocabulary import SpeechVocabulary, parse_speech_answer
from audio_recipes.tasks.base import Example, Task, register_task, rows_by_id


def chat_row_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A chat row -> {system, question, answer, text, speech_tokens}; ValueError saying what is wrong."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("no 'messages' list of {role, content} turns")
    roles = [message.get("role") for message in messages]
    if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
        raise ValueError(f"turns are {roles}; expected [system,] user, assistant")
    *system, user, assistant = messages
    if not isinstance(user.get("content"), str) or not isinstance(assistant.get("content"), str):
        raise ValueError("user and assistant contents must be strings")
    answer = parse_speech_answer(assistant["content"])
    if not answer["valid"]:
        raise ValueError(f"assistant turn is not 'text, newline, speech tokens between markers': {answer['error']}")
    return {"system": system[0].get("content") if system else None, "question": user["content"],
            "answer": assistant["content"], "text": answer["text"], "speech_tokens": answer["speech_tokens"]}


@register_task
class SpeechTokensTask(Task):
    name = "speech_tokens"
    default_system_prompt = ""  # no system turn unless the data or the recipe gives one
    input_modes = ("text",)  # a text question; the speech is in the answer

    def __init__(self, args):
        super().__init__(args)
        self.largest_speech_token: tuple[int, str] | None = None  # (id, where), checked against the model

    def load_examples(self, split: str) -> list[Example]:
        path = self.data_file(split)
        if path is None:
            raise DataError(f"task speech_tokens: the recipe sets no {split}_file")
        examples = []
        for line_number, row in read_jsonl_lines(path):
            where = f"{path}, line {line_number} (id {row.get('id')!r})"
            try:
                fields = chat_row_fields(row)
            except ValueError as error:
                raise DataError(f"{where}: {error}") from error
            if "id" not in row:
                raise DataError(f"{where}: no 'id'")
            if fields["speech_tokens"]:
                largest = max(fields["speech_tokens"])
                if self.largest_speech_token is None or largest > self.largest_speech_token[0]:
                    self.largest_speech_token = (largest, where)
            reference = {"text": fields["text"], "speech_tokens": fields["speech_tokens"]}
            examples.append(Example(
                str(row["id"]), None, self.args.system_prompt or fields["system"] or self.default_system_prompt,
                fields["question"], fields["answer"], json.dumps(reference),
            ))
        return examples

    def check_tokenizer(self, tokenizer) -> None:
        vocabulary = SpeechVocabulary.of(tokenizer)
        if vocabulary is None:
            raise DataError("task speech_tokens: the model has no speech tokens; set num_speech_tokens in the recipe "
                            "(4096 for CosyVoice v1) to add them")
        if self.largest_speech_token and self.largest_speech_token[0] >= vocabulary.num_speech_tokens:
            token, where = self.largest_speech_token
            raise DataError(f"{where}: speech token {token} is beyond the model's {vocabulary.num_speech_tokens} "
                            "speech tokens")

    def parse(self, text: str) -> dict[str, Any]:
        return parse_speech_answer(text)

    def official_prediction(self, example: Example, prediction: dict[str, Any]) -> dict[str, Any]:
        """The input of a CosyVoice token-to-waveform step: the text and the speech token ids."""
        return {"id": example.id, "text": prediction.get("text", ""),
                "speech_tokens": prediction.get("speech_tokens", []), "valid": prediction.get("valid", False)}

    def score(self, examples: list[Example], predictions: dict[str, dict], skip_missing: bool = False) -> dict:
        references = {example.id: json.loads(example.reference) for example in examples}
        return score_speech_answers(references, predictions, skip_missing=skip_missing)

    def score_files(self, gold_path: Path, predictions_path: Path, skip_missing: bool = False) -> dict:
        references = {}
        for line_number, row in read_jsonl_lines(gold_path):
            try:
                fields = chat_row_fields(row)
            except ValueError as error:
                raise DataError(f"{gold_path}, line {line_number}: {error}") from error
            if "id" not in row:
                raise DataError(f"{gold_path}, line {line_number}: no 'id'")
            references[str(row["id"])] = {"text": fields["text"], "speech_tokens": fields["speech_tokens"]}
        predictions, num_duplicates = rows_by_id(read_jsonl(predictions_path))
        return {**score_speech_answers(references, predictions, skip_missing=skip_missing),
                "num_duplicates": num_duplicates}

