"""Generated documents (events/, docs/openapi.json) are current; samples parse back."""

from __future__ import annotations

import json

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.envelopes import EventBridgeEnvelope
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from chimera.domain.events import EVENT_TYPES, SOURCE

from chimera_local import schemas


def test_events_dir_is_current():
    assert schemas.main(["--check"]) == 0


def test_samples_are_eventbridge_envelopes_of_their_models(repo):
    """Checked by Powertools' own EventBridge model and envelope, not only by our schema."""
    for cls in EVENT_TYPES:
        envelope = json.loads((repo / "events" / f"{cls.detail_type}.sample.json").read_text())
        model = EventBridgeModel.model_validate(envelope)
        assert model.detail_type == cls.detail_type and model.source == SOURCE
        assert isinstance(parse(event=envelope, model=cls, envelope=EventBridgeEnvelope), cls)
