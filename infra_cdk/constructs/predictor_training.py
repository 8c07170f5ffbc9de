"""What starts predictor-training: an EventBridge rule on EvolutionRunCompleted.

Why this trigger and not a schedule: the predictor is trained on an agent's history, and the
history grows only when a run of that agent completes; the event names the agent, so each
completed run retrains that agent's predictor on the history it just grew (a weekly schedule
would need to list the agents itself and would retrain agents whose history did not change).
An agent with too little history is refused inside the machine as a recorded decision, and a
model below the R² floor is not installed, so a retrain after every run cannot make the
installed model worse than the floor.
"""

from __future__ import annotations

from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_stepfunctions as sfn
from chimera.domain.events import SOURCE, EvolutionRunCompleted
from constructs import Construct


class PredictorTrainingTrigger(Construct):
    def __init__(
        self, scope: Construct, id: str, *, bus: events.IEventBus, machine: sfn.StateMachine
    ) -> None:
        super().__init__(scope, id)
        self.rule = events.Rule(
            self,
            "OnEvolutionRunCompleted",
            event_bus=bus,
            description="predictor-training: retrain the agent's predictor on its grown history",
            event_pattern=events.EventPattern(
                source=[SOURCE], detail_type=[EvolutionRunCompleted.detail_type]
            ),
            targets=[
                targets.SfnStateMachine(
                    machine,
                    input=events.RuleTargetInput.from_object(
                        {"agent_id": events.EventField.from_path("$.detail.agent_id")}
                    ),
                )
            ],
        )
