"""DynamoDB adapter of the store ports (single table: pk, sk, doc, rev, expires_at, gsi1, num).

Failures are mapped by their real cause (chimera.adapters.aws.errors): a failed condition is a
conflict, throttling is retryable unavailability, an item too large is a validation error.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from chimera.adapters.aws.errors import translate
from chimera.adapters.kv import (
    ABSENT,
    INDEX,
    Add,
    KeyValueStore,
    Put,
    Query,
    Row,
    Versioned,
    Write,
    unreadable,
)
from chimera.domain.errors import UnavailableError
from chimera.ports import BlobStore

UNPROCESSED_RETRIES = 5


def _doc(item: dict[str, Any]) -> str:
    """The item's document; an item written by hand without a string `doc` reads as
    unreadable (the store names it and skips it) rather than failing the whole query."""
    doc = item.get("doc")
    if not isinstance(doc, dict) or not isinstance(doc.get("S"), str):
        return unreadable(f"no string attribute 'doc' (attributes: {', '.join(sorted(item))})")
    text: str = doc["S"]
    return text


def _key(item: dict[str, Any], name: str) -> str:
    value = item.get(name, {})
    return str(value.get("S", value)) if isinstance(value, dict) else str(value)


class DynamoDbStore(KeyValueStore):
    def __init__(self, table_name: str, client: Any, blobs: BlobStore) -> None:
        super().__init__(blobs)
        self.table = table_name
        self.client = client

    def _get(self, pk: str, sk: str) -> str | None:
        item = self._get_item(pk, sk, "doc")
        return None if item is None else _doc(item)

    def _get_num(self, pk: str, sk: str) -> float:
        item = self._get_item(pk, sk, "num")
        return float(item["num"]["N"]) if item is not None and "num" in item else 0.0

    def _get_item(self, pk: str, sk: str, attribute: str) -> dict[str, Any] | None:
        with translate(f"get {pk}/{sk}"):
            item: dict[str, Any] | None = self.client.get_item(
                TableName=self.table,
                Key={"pk": {"S": pk}, "sk": {"S": sk}},
                ConsistentRead=True,
                ProjectionExpression="#a",
                ExpressionAttributeNames={"#a": attribute},
            ).get("Item")
        return item

    def _get_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Versioned]:
        """BatchGetItem (100 keys a call), strongly consistent; unprocessed keys asked again."""
        out: dict[tuple[str, str], Versioned] = {}
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {
                self.table: {
                    "Keys": [
                        {"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in keys[start : start + 100]
                    ],
                    "ConsistentRead": True,
                    "ProjectionExpression": "pk, sk, doc, rev",
                }
            }
            for attempt in range(UNPROCESSED_RETRIES):
                if attempt:  # DynamoDB left some keys (throttled): back off, ask for those
                    time.sleep(0.05 * 2**attempt)
                with translate(f"batch get {keys[start][0]}/{keys[start][1]}..."):
                    answer = self.client.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    rev = item.get("rev", {}).get("N")
                    key = (_key(item, "pk"), _key(item, "sk"))
                    out[key] = Versioned(_doc(item), None if rev is None else int(rev))
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
            else:
                raise UnavailableError(
                    f"{self.table}: BatchGetItem left keys unprocessed {UNPROCESSED_RETRIES} times"
                )
        return out

    def _run_query(self, q: Query) -> list[Row]:
        key, sort = ("gsi1pk", "gsi1sk") if q.index else ("pk", "sk")
        condition = "#k = :k"
        values: dict[str, Any] = {":k": {"S": q.pk}}
        if q.prefix is not None:
            condition += " AND begins_with(#s, :p)"
            values[":p"] = {"S": q.prefix}
        if q.between is not None:
            condition += " AND #s BETWEEN :lo AND :hi"
            values[":lo"], values[":hi"] = {"S": q.between[0]}, {"S": q.between[1]}
        sort_condition = q.prefix is not None or q.between is not None
        names = {"#k": key, **({"#s": sort} if sort_condition else {})}
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": not q.newest_first,
        }
        if q.limit is not None:
            params["Limit"] = q.limit  # per page: a small limit reads a small page
        if q.index:
            params["IndexName"] = INDEX  # GSIs read eventually consistent
        else:
            params["ConsistentRead"] = True
        rows: list[Row] = []
        with translate(f"query {q.pk}"):
            paginator = self.client.get_paginator("query")
            for page in paginator.paginate(**params):
                rows.extend(
                    Row(_key(item, "pk"), _key(item, "sk"), _doc(item)) for item in page["Items"]
                )
                if q.limit is not None and len(rows) >= q.limit:
                    return rows[: q.limit]
        return rows

    @staticmethod
    def _item(put: Put) -> dict[str, Any]:
        item: dict[str, Any] = {"pk": {"S": put.pk}, "sk": {"S": put.sk}, "doc": {"S": put.doc}}
        if put.rev is not None:
            item["rev"] = {"N": str(put.rev)}
        if put.ttl is not None:
            item["expires_at"] = {"N": str(put.ttl)}
        if put.gsi1 is not None:
            item["gsi1pk"], item["gsi1sk"] = {"S": put.gsi1[0]}, {"S": put.gsi1[1]}
        for name, value in put.attrs.items():
            item[name] = {"S": value}
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

    def _update(self, add: Add) -> dict[str, Any]:
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"pk": {"S": add.pk}, "sk": {"S": add.sk}},
            "UpdateExpression": "ADD num :d SET doc = if_not_exists(doc, :empty)",
            "ExpressionAttributeValues": {":d": {"N": repr(add.delta)}, ":empty": {"S": "{}"}},
        }
        if add.ceiling is not None:
            update["ConditionExpression"] = "attribute_not_exists(num) OR num <= :room"
            update["ExpressionAttributeValues"][":room"] = {"N": repr(add.ceiling - add.delta)}
            if add.delta > add.ceiling:  # cannot fit even in an empty counter: always refuse
                update["ConditionExpression"] = "attribute_not_exists(pk) AND attribute_exists(pk)"
                del update["ExpressionAttributeValues"][":room"]
        return update

    def _commit(self, writes: Sequence[Write]) -> None:
        what = ", ".join(f"{w.pk}/{w.sk}" for w in writes[:3]) + ("..." if len(writes) > 3 else "")
        with translate(what):
            if len(writes) == 1:
                w = writes[0]
                if isinstance(w, Add):
                    self.client.update_item(**self._update(w))
                else:
                    self.client.put_item(
                        TableName=self.table, Item=self._item(w), **self._condition(w)
                    )
                return
            items = [
                {"Update": self._update(w)}
                if isinstance(w, Add)
                else {"Put": {"TableName": self.table, "Item": self._item(w), **self._condition(w)}}
                for w in writes
            ]
            self.client.transact_write_items(TransactItems=items)

    def _insert(self, put: Put) -> bool:
        with translate(f"put {put.pk}/{put.sk}"):
            try:
                self.client.put_item(
                    TableName=self.table,
                    Item=self._item(put),
                    ConditionExpression="attribute_not_exists(pk)",
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                return False
        return True

    def _delete(self, pk: str, sk: str) -> None:
        with translate(f"delete {pk}/{sk}"):
            self.client.delete_item(TableName=self.table, Key={"pk": {"S": pk}, "sk": {"S": sk}})
