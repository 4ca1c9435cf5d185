"""The recipe's ``governance:`` and ``gate:`` sections.

``governance`` holds what the KVKK and the EU AI Act documentation need and no
stage can measure (purpose, legal basis, retention, controller), recorded in the
audit ledger by ``prepare``; ``gate`` holds the conditions a run's evaluation must
meet before ``ayar export`` and ``ayar serve`` release it (grammar in
:mod:`ayar.govern.gates`).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from ayar.section import Section


class GovernanceSection(Section):
    purpose: str | None = Field(None, description=(
        "Why the personal data in the training data is processed (KVKK art. 4: a specific, explicit purpose), "
        "e.g. 'automatic routing of customer support tickets'."))
    legal_basis: str | None = Field(None, description=(
        "The KVKK art. 5/6 ground for the processing, e.g. 'legitimate interest (art. 5/2-f)' or 'explicit "
        "consent'."))
    retention_days: int | None = Field(None, gt=0, description=(
        "How long the prepared data and the models trained on it are kept, in days."))
    controller: str | None = Field(None, description="The data controller (veri sorumlusu): the organisation.")
    contact: str | None = Field(None, description=(
        "Where data subjects and authorities reach the controller (a functional address, e.g. kvkk@bank.example)."))
    cross_border_transfer: str | None = Field(None, description=(
        "Whether and where data or models leave Türkiye (KVKK art. 9), e.g. 'none'; null: not stated."))
    intended_use: str | None = Field(None, description="What the tuned model is for (model card and Annex IV).")
    license: str = Field("other", description="Licence of the tuned weights (model card metadata), e.g. apache-2.0.")
    language: list[str] = Field(default_factory=lambda: ["tr"], description="Languages of the model (ISO 639-1).")
    ledger: str | None = Field(None, description=(
        "Audit ledger file; null: $AYAR_LEDGER, else ledger.jsonl in $AYAR_HOME (~/.cache/ayar)."))
    allow_external_pii: bool = Field(False, description=(
        "Let `ayar eval` send prompts that hold personal data to a judge or endpoint not on this machine "
        "(otherwise it refuses); what is sent where is recorded in the ledger as counts and hashes."))


class GateSection(Section):
    require: list[str] = Field(min_length=1, description=(
        "Conditions on the latest evaluation, all of which must hold for export and serve, e.g. "
        "'tuned.field_accuracy[category] >= 0.9', 'diff.ci95.low > 0', 'forgetting.flag == false', "
        "'memorisation.max_exposure_bits <= 10'."))
    metric: str | None = Field(None, description=(
        "The metric that tuned., base. and diff. conditions without a metric name refer to, e.g. exact_match."))

    @field_validator("require")
    @classmethod
    def _parse(cls, value: list[str]) -> list[str]:
        from ayar.govern.gates import parse_condition

        for text in value:
            parse_condition(text)  # raises ValueError with the reason
        return value
