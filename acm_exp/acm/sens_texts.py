"""Sens-Merging's texts: the (prompt, answer) pair each model is scored on, per calibration record.

``sens.format=l2s`` (default) writes the L2S code's texts (``layer_sensitivity_sens.py``, prompt
formats ``question_cot`` and ``question_dpsk``): the base on ``<|question|>\\n{question}\\n\\n
<|cot_solution|>\\n`` + the record's (short) solution, the fine-tuned model on ``<|question|>\\n
{question}\\n\\n<|dpsk_res|>\\n`` + its own long response, both stripped (the tokenizer's EOS is
appended when tokenizing). The response is the record's ``sens.response_field``, or assembled by
``calibration.response_template`` from the record's fields (s1K-1.1: DeepSeek-R1's thinking
trajectory and attempt). A corpus with no responses at all (the s1K copy) scores the fine-tuned
model on the templates instead, with a warning. ``sens.format=template``: the templates for both
models: ``sens.prompt_template`` and a long answer (the solution) or a short one (``\\boxed{}`` of
the record's ``sens.answer_field``, else the solution's final answer).

A record that cannot give its model an answer (no solution, no response, no extractable final
answer) is skipped and counted (``SensTexts.skipped``): the stage fails only when no record is
usable (``acm_exp.acm.sensitivity``, which also skips the samples longer than ``sens.max_tokens``).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from acm_exp.calibration import response_fields
from acm_exp.config import CalibrationConfig, SensFormat
from acm_exp.errors import ConfigError

log = logging.getLogger(__name__)

ANSWER_STYLES = ("long", "short")
SENS_FORMATS = SensFormat.values()
# The L2S code's prompts: "question_cot" for the base (scored on a short solution) and
# "question_dpsk" for the fine-tuned model (scored on its own long response).
L2S_PROMPTS = {
    "base": "<|question|>\n{question}\n\n<|cot_solution|>\n",
    "finetuned": "<|question|>\n{question}\n\n<|dpsk_res|>\n",
}
# Reasons a record is skipped, as counted in the log and in coefficients.json.
NO_SOLUTION = "no_solution"
NO_RESPONSE = "no_response"
NO_ANSWER = "no_extractable_answer"


@dataclass
class SensTexts:
    """One model's Sens-Merging texts: the usable (prompt, answer) pairs and why the others were left out."""

    examples: list[tuple[str, str]]
    description: str
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return len(self.examples) + sum(self.skipped.values())


# ---------------------------------------------------------------------------------------------
# Validation (before any weight is read)


def validate_answer_templates(sens) -> None:
    """Raise ConfigError on a bad format, answer style or template of the ``sens`` config group."""
    if sens.format not in SENS_FORMATS:
        raise ConfigError(f"sens.format={sens.format!r}; expected one of {SENS_FORMATS}")
    for role in ("base", "finetuned"):
        style = getattr(sens, f"{role}_answers")
        if style not in ANSWER_STYLES:
            raise ConfigError(f"sens.{role}_answers={style!r}; expected one of {ANSWER_STYLES}")
    placeholders = {
        "prompt_template": "question",
        "long_answer_template": "solution",
        "short_answer_template": "answer",
    }
    for name, placeholder in placeholders.items():
        template = getattr(sens, name)
        try:
            filled = template.format(**{placeholder: "\0"})
        except (KeyError, IndexError, ValueError) as error:
            raise ConfigError(
                f"sens.{name}={template!r} is not a template with only {{{placeholder}}} "
                f"({type(error).__name__}: {error})"
            ) from None
        if "\0" not in filled:
            raise ConfigError(f"sens.{name}={template!r}; expected a template containing {{{placeholder}}}")


# ---------------------------------------------------------------------------------------------
# Per record


def _text(record: dict, field_name: str | None) -> str | None:
    """The record's stripped text in ``field_name``; None when absent or blank."""
    value = record.get(field_name) if field_name is not None else None
    return value.strip() if isinstance(value, str) and value.strip() else None


def response_of(record: dict, cfg: CalibrationConfig, sens) -> str | None:
    """The fine-tuned model's own response in ``record`` (stripped), or None when it has none."""
    template = getattr(cfg, "response_template", None)
    if template is None:
        return _text(record, sens.response_field)
    parts = {name: _text(record, name) for name in response_fields(template)}
    if any(value is None for value in parts.values()):
        return None
    return template.format(**parts).strip()


def final_answer(record: dict, cfg: CalibrationConfig, answer_field: str | None) -> str | None:
    """The record's final answer: its ``answer_field`` when it has one, else the last ``\\boxed{}``,
    "the answer is ..." or number of its solution; None when there is none."""
    from acm_exp.eval.grading import extract_answer

    if answer_field is not None and record.get(answer_field) not in (None, ""):
        return str(record[answer_field])
    solution = _text(record, cfg.solution_field)
    return extract_answer(solution) if solution is not None else None


# ---------------------------------------------------------------------------------------------
# One model's texts


def template_texts(records: list[dict], cfg: CalibrationConfig, sens, style: str) -> SensTexts:
    """(prompt, answer) per record with answers of ``style`` (long: the solution; short: the final answer)."""
    needs_solution = style == "long" or sens.answer_field is None
    if needs_solution and cfg.solution_field is None:
        raise ConfigError(f"calibration {cfg.name!r} has no solution_field; {style} answers need one")
    if sens.answer_field is not None and style == "short" and records:
        if not any(sens.answer_field in record for record in records):
            log.warning(
                "Sens-Merging: sens.answer_field=%r is a field of no selected record of %r; the final answers "
                "are extracted from the solutions (%s)",
                sens.answer_field,
                cfg.name,
                cfg.solution_field,
            )
    examples, skipped = [], Counter()
    for record in records:
        prompt = sens.prompt_template.format(question=record[cfg.text_field])
        if style == "long":
            solution = record.get(cfg.solution_field)
            if not isinstance(solution, str) or not solution.strip():
                skipped[NO_SOLUTION] += 1
                continue
            examples.append((prompt, sens.long_answer_template.format(solution=solution)))
            continue
        answer = final_answer(record, cfg, sens.answer_field)
        if answer is None:
            skipped[NO_ANSWER] += 1
            continue
        examples.append((prompt, sens.short_answer_template.format(answer=answer)))
    return SensTexts(examples, f"template ({style} answers)", dict(skipped))


def l2s_texts(records: list[dict], cfg: CalibrationConfig, sens, role: str) -> SensTexts:
    """(prompt, answer) per record in the L2S code's format: the base on its solution, the fine-tuned
    model on its response; records without that text are skipped."""
    examples, skipped = [], Counter()
    for record in records:
        answer = _text(record, cfg.solution_field) if role == "base" else response_of(record, cfg, sens)
        if answer is None:
            skipped[NO_SOLUTION if role == "base" else NO_RESPONSE] += 1
            continue
        examples.append((L2S_PROMPTS[role].format(question=record[cfg.text_field].strip()), answer))
    return SensTexts(examples, f"l2s ({_answer_source(cfg, sens, role)})", dict(skipped))


def _answer_source(cfg: CalibrationConfig, sens, role: str) -> str:
    """Where ``role``'s L2S answer comes from, for the log: a field, or the response template."""
    if role == "base":
        return str(cfg.solution_field)
    template = getattr(cfg, "response_template", None)
    return f"calibration.response_template {template!r}" if template else str(sens.response_field)


def sens_texts(records: list[dict], cfg: CalibrationConfig, sens, role: str) -> SensTexts:
    """``role``'s texts under ``sens.format`` (see the module docstring)."""
    style = getattr(sens, f"{role}_answers")
    if sens.format == "l2s":
        texts = l2s_texts(records, cfg, sens, role)
        if texts.examples or not records:
            return texts
        log.warning(
            "Sens-Merging: no calibration record of %r has the %s model's answer (%s); it is scored on the "
            "template texts (%s answers) instead of the L2S format",
            cfg.name,
            role,
            _answer_source(cfg, sens, role),
            style,
        )
    return template_texts(records, cfg, sens, style)


def describe_skipped(skipped: dict[str, int], max_tokens: int | None = None) -> str:
    """``"3 too long for sens.max_tokens=2048, 1 without an extractable answer"`` (empty when none)."""
    labels = {
        "too_long": f"too long for sens.max_tokens={max_tokens}",
        NO_ANSWER: "without an extractable answer",
        NO_RESPONSE: "without a response",
        NO_SOLUTION: "without a solution",
        "empty_answer": "whose answer tokenizes to nothing",
    }
    return ", ".join(f"{count} {labels.get(reason, reason)}" for reason, count in sorted(skipped.items()) if count)
