"""events/ is generated from the models and must be current; samples parse back."""

from __future__ import annotations

import json

from chimera.domain.events import EVENT_TYPES

from chimera_local import schemas


def test_events_dir_is_current():
    assert schemas.main(["--check"]) == 0


def test_samples_parse_as_their_models(repo):
    for cls in EVENT_TYPES:
        envelope = json.loads((repo / "events" / f"{cls.detail_type}.sample.json").read_text())
        assert envelope["detail-type"] == cls.detail_type
        cls.model_validate(envelope["detail"])
