"""Transactions for replay tests, made by feeding bytes to a conversation as the pipeline does."""

from __future__ import annotations

from collections import Counter

from analyzers import BodyKeep, Endpoints, Transaction
from analyzers.http.transactions import Conversation


def transaction(request: bytes, response: bytes, *, uid: str = "C1",
                methods: frozenset[str] = frozenset({"GET", "POST", "PUT"}),
                t0: float = 100.0, took: float = 0.25) -> Transaction:
    conv = Conversation(Endpoints(uid, "10.0.0.1", 30000, "10.1.0.1", 80, False), Counter())
    conv.bodies = BodyKeep(methods, responses=True)
    conv.client.data(request, t0)
    conv.server.data(response, t0 + took)
    tx, = conv.out
    return tx
