"""An in-memory twin of the subset of PyMongo's async collection API the platform uses.

Used by unit tests and the embedded run mode. Repository tests run against both this and the
real MongoDB-compatible server, which keeps the two honest.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.errors import DuplicateKeyError

_MISSING = object()


@dataclass
class UpdateResult:
    matched_count: int
    modified_count: int
    upserted_id: Any = None


@dataclass
class InsertOneResult:
    inserted_id: Any


@dataclass
class BulkWriteResult:
    matched_count: int
    modified_count: int


@dataclass
class DeleteResult:
    deleted_count: int


class InMemoryDatabase:
    def __init__(self, name: str = "itsm") -> None:
        self.name = name
        self._collections: dict[str, InMemoryCollection] = {}

    def __getitem__(self, name: str) -> InMemoryCollection:
        return self._collections.setdefault(name, InMemoryCollection(name))

    def __getattr__(self, name: str) -> InMemoryCollection:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    async def command(self, name: str) -> dict[str, Any]:
        return {"ok": 1.0}


class InMemoryCollection:
    def __init__(self, name: str) -> None:
        self.name = name
        self._docs: dict[Any, dict[str, Any]] = {}

    async def create_index(self, keys: Any, **kwargs: Any) -> str:
        return "memory"

    async def insert_one(self, document: Mapping[str, Any]) -> InsertOneResult:
        doc = _bson(dict(document))
        if doc.get("_id") in self._docs:
            raise DuplicateKeyError(f"E11000 duplicate key _id {doc['_id']!r}")
        self._docs[doc["_id"]] = doc
        return InsertOneResult(doc["_id"])

    async def find_one(
        self, filter: Mapping[str, Any], projection: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        for doc in self._docs.values():
            if matches(doc, filter):
                return _project(doc, projection)
        return None

    def find(
        self, filter: Mapping[str, Any] | None = None, projection: Mapping[str, Any] | None = None
    ) -> InMemoryCursor:
        found = [d for d in self._docs.values() if matches(d, filter or {})]
        return InMemoryCursor([_project(d, projection) for d in found])

    async def count_documents(self, filter: Mapping[str, Any]) -> int:
        return sum(1 for d in self._docs.values() if matches(d, filter))

    async def update_one(
        self, filter: Mapping[str, Any], update: Mapping[str, Any], upsert: bool = False
    ) -> UpdateResult:
        for doc in self._docs.values():
            if matches(doc, filter):
                before = copy.deepcopy(doc)
                _apply_update(doc, update, inserting=False)
                return UpdateResult(1, int(before != doc))
        if not upsert:
            return UpdateResult(0, 0)
        new = {k: copy.deepcopy(v) for k, v in filter.items() if not k.startswith("$")}
        new = {k: v for k, v in new.items() if not isinstance(v, dict)}
        _apply_update(new, update, inserting=True)
        await self.insert_one(new)
        return UpdateResult(0, 0, upserted_id=new["_id"])

    async def update_many(
        self, filter: Mapping[str, Any], update: Mapping[str, Any]
    ) -> UpdateResult:
        matched = modified = 0
        for doc in self._docs.values():
            if matches(doc, filter):
                before = copy.deepcopy(doc)
                _apply_update(doc, update, inserting=False)
                matched, modified = matched + 1, modified + int(before != doc)
        return UpdateResult(matched, modified)

    async def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        upsert: bool = False,
        return_document: bool = False,
    ) -> dict[str, Any] | None:
        """As PyMongo's; `return_document` truthy means ReturnDocument.AFTER."""
        before = await self.find_one(filter)
        result = await self.update_one(filter, update, upsert=upsert)
        if not return_document:
            return before
        key = before["_id"] if before is not None else result.upserted_id
        return None if key is None else await self.find_one({"_id": key})

    async def bulk_write(self, requests: Sequence[Any], ordered: bool = True) -> BulkWriteResult:
        matched = modified = 0
        for request in requests:
            # pymongo.UpdateOne keeps its arguments in _filter/_doc
            result = await self.update_one(request._filter, request._doc)
            matched += result.matched_count
            modified += result.modified_count
        return BulkWriteResult(matched, modified)

    async def delete_many(self, filter: Mapping[str, Any]) -> DeleteResult:
        doomed = [k for k, d in self._docs.items() if matches(d, filter)]
        for k in doomed:
            del self._docs[k]
        return DeleteResult(len(doomed))


class InMemoryCursor:
    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self._docs = docs
        self._skip = 0
        self._limit = 0

    def sort(self, keys: Sequence[tuple[str, int]]) -> InMemoryCursor:
        for field, direction in reversed(list(keys)):  # stable sorts, least significant first

            def by_field(doc: dict[str, Any], field: str = field) -> tuple[int, Any]:
                return _sort_key(_get(doc, field))

            self._docs.sort(key=by_field, reverse=direction < 0)
        return self

    def skip(self, n: int) -> InMemoryCursor:
        self._skip = n
        return self

    def limit(self, n: int) -> InMemoryCursor:
        self._limit = n
        return self

    async def to_list(self, length: int | None = None) -> list[dict[str, Any]]:
        docs = self._docs[self._skip :]
        if self._limit:
            docs = docs[: self._limit]
        return docs[:length] if length else docs


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, "") if value is _MISSING or value is None else (1, value)


def _get(doc: Any, path: str) -> Any:
    current = doc
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part, _MISSING)
        elif isinstance(current, list) and part.isdigit():
            index = int(part)
            current = current[index] if index < len(current) else _MISSING
        else:
            return _MISSING
        if current is _MISSING:
            return _MISSING
    return current


def matches(doc: Mapping[str, Any], filter: Mapping[str, Any]) -> bool:
    for key, condition in filter.items():
        if key == "$and":
            if not all(matches(doc, f) for f in condition):
                return False
        elif key == "$or":
            if not any(matches(doc, f) for f in condition):
                return False
        elif not _matches_value(_get(doc, key), condition):
            return False
    return True


def _matches_value(value: Any, condition: Any) -> bool:
    if isinstance(condition, dict) and condition and all(k.startswith("$") for k in condition):
        operators = dict(condition)
        if "$regex" in operators:
            flags = re.IGNORECASE if "i" in operators.pop("$options", "") else 0
            pattern = re.compile(operators.pop("$regex"), flags)
            texts = [v for v in _candidates(value) if isinstance(v, str)]
            if not any(pattern.search(t) for t in texts):
                return False
        return all(_operator(value, op, arg) for op, arg in operators.items())
    return _equals(value, condition)


def _candidates(value: Any) -> Iterable[Any]:
    if isinstance(value, list):
        yield from value
    yield value


def _equals(value: Any, expected: Any) -> bool:
    return any(v == expected for v in _candidates(value) if v is not _MISSING)


def _operator(value: Any, op: str, arg: Any) -> bool:
    present = [v for v in _candidates(value) if v is not _MISSING]
    comparable = [v for v in present if v is not None]
    match op:
        case "$exists":
            return (value is not _MISSING) == bool(arg)
        case "$eq":
            return _equals(value, arg)
        case "$ne":
            return not _equals(value, arg)
        case "$in":
            return any(_equals(value, a) for a in arg) or (value is _MISSING and None in arg)
        case "$nin":
            return not any(_equals(value, a) for a in arg)
        case "$gt":
            return any(_comparable(v, arg) and v > arg for v in comparable)
        case "$gte":
            return any(_comparable(v, arg) and v >= arg for v in comparable)
        case "$lt":
            return any(_comparable(v, arg) and v < arg for v in comparable)
        case "$lte":
            return any(_comparable(v, arg) and v <= arg for v in comparable)
    raise NotImplementedError(f"in-memory collection does not support {op}")


def _comparable(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return (isinstance(a, numbers) and isinstance(b, numbers)) or type(a) is type(b)


def _bson(value: Any) -> Any:
    """A deep copy as BSON would store it: tuples become lists."""
    if isinstance(value, dict):
        return {k: _bson(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_bson(v) for v in value]
    return copy.deepcopy(value)


def _apply_update(doc: dict[str, Any], update: Mapping[str, Any], *, inserting: bool) -> None:
    for op, fields in update.items():
        for path, raw in fields.items():
            arg = _bson(raw)
            parent, leaf = _parent(doc, path)
            match op:
                case "$set":
                    parent[leaf] = copy.deepcopy(arg)
                case "$setOnInsert":
                    if inserting:
                        parent[leaf] = copy.deepcopy(arg)
                case "$unset":
                    parent.pop(leaf, None)
                case "$inc":
                    parent[leaf] = parent.get(leaf, 0) + arg
                case "$max":
                    if leaf not in parent or parent[leaf] < arg:
                        parent[leaf] = arg
                case "$push":
                    items = arg["$each"] if isinstance(arg, dict) and "$each" in arg else [arg]
                    parent.setdefault(leaf, []).extend(copy.deepcopy(items))
                case "$pullAll":
                    parent[leaf] = [v for v in parent.get(leaf, []) if v not in arg]
                case _:
                    raise NotImplementedError(f"in-memory collection does not support {op}")


def _parent(doc: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    *parents, leaf = path.split(".")
    current = doc
    for part in parents:
        current = current.setdefault(part, {})
    return current, leaf


def _project(doc: dict[str, Any], projection: Mapping[str, Any] | None) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    if not projection:
        return doc
    if all(not v for v in projection.values()):
        return {k: v for k, v in doc.items() if k not in projection}
    return {k: v for k, v in doc.items() if k == "_id" or projection.get(k)}
