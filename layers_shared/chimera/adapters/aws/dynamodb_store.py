"""DynamoDB adapter of the Store port (single table: pk, sk, doc, rev, ttl)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chimera.adapters.kv import ABSENT, KeyValueStore, Put
from chimera.domain.errors import ConflictError


class DynamoDbStore(KeyValueStore):
    def __init__(self, table_name: str, client: Any) -> None:
        self.table = table_name
        self.client = client

    def _get(self, pk: str, sk: str) -> str | None:
        item = self.client.get_item(
            TableName=self.table,
            Key={"pk": {"S": pk}, "sk": {"S": sk}},
            ConsistentRead=True,
        ).get("Item")
        return None if item is None else item["doc"]["S"]

    def _query(self, pk: str) -> list[str]:
        paginator = self.client.get_paginator("query")
        docs: list[str] = []
        for page in paginator.paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": pk}},
            ConsistentRead=True,
        ):
            docs.extend(item["doc"]["S"] for item in page["Items"])
        return docs

    @staticmethod
    def _item(put: Put) -> dict[str, Any]:
        item: dict[str, Any] = {"pk": {"S": put.pk}, "sk": {"S": put.sk}, "doc": {"S": put.doc}}
        if put.rev is not None:
            item["rev"] = {"N": str(put.rev)}
        if put.ttl is not None:
            item["expires_at"] = {"N": str(put.ttl)}
        return item

    @staticmethod
    def _condition(put: Put) -> dict[str, Any]:
        if put.condition is None:
            return {}
        if put.condition == ABSENT:
            return {"ConditionExpression": "attribute_not_exists(pk)"}
        return {
            "ConditionExpression": "rev = :rev",
            "ExpressionAttributeValues": {":rev": {"N": str(put.condition)}},
        }

    def _write(self, puts: Sequence[Put]) -> None:
        if len(puts) == 1:
            try:
                self.client.put_item(
                    TableName=self.table, Item=self._item(puts[0]), **self._condition(puts[0])
                )
            except self.client.exceptions.ConditionalCheckFailedException as exc:
                raise ConflictError(f"{puts[0].pk}/{puts[0].sk}: condition failed") from exc
            return
        items = [
            {"Put": {"TableName": self.table, "Item": self._item(p), **self._condition(p)}}
            for p in puts
        ]
        try:
            self.client.transact_write_items(TransactItems=items)
        except self.client.exceptions.TransactionCanceledException as exc:
            raise ConflictError(f"transaction cancelled: {exc}") from exc

    def _put_if_absent(self, put: Put) -> bool:
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self._item(put),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True
