"""A Powertools batch processor that stores a batch together and still fails messages alone.

Powertools' `BatchProcessor` calls the record handler once per message, so a handler that
stores is one write per message. `CollectingBatchProcessor` keeps the Powertools shape
(`process_partial_response(event, CollectingBatchProcessor.collect, processor, context)`):
each message is parsed by the model at the edge (a message that does not parse fails alone,
as before), the record handler only collects it, and then one `flush` call receives every
parsed message and answers, per message, None or the exception that failed it. The failed
ones are reported in `batchItemFailures`, in the batch's order; the rest are deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel

Flush = Callable[[Sequence[Any]], Sequence[BaseException | None]]


class CollectingBatchProcessor(BatchProcessor):
    def __init__(self, model: type[SqsRecordModel], flush: Flush) -> None:
        super().__init__(event_type=EventType.SQS, model=model)
        self.flush = flush

    @staticmethod
    def collect(record: Any) -> Any:
        """The record handler: the parsed message, kept for the flush."""
        return record

    def process(self) -> list[tuple[Any, ...]]:
        results = super().process()
        parsed = [(i, entry) for i, entry in enumerate(results) if entry[0] == "success"]
        if not parsed:
            return results
        outcomes = list(self.flush([entry[1] for _, entry in parsed]))
        if len(outcomes) != len(parsed):
            raise RuntimeError(f"flush answered {len(outcomes)} outcomes for {len(parsed)}")
        for (i, entry), error in zip(parsed, outcomes, strict=True):
            if error is None:
                continue
            message = entry[1]
            self.success_messages[:] = [m for m in self.success_messages if m is not entry[2]]
            results[i] = self.failure_handler(message, (type(error), error, error.__traceback__))
        order = {record["messageId"]: n for n, record in enumerate(self.records)}
        self.fail_messages.sort(key=lambda m: order.get(_message_id(m), len(order)))
        return results


def _message_id(message: Any) -> str:
    found = getattr(message, "messageId", None) or getattr(message, "message_id", "")
    return str(found)
