"""Shared helpers of the tests that drive the Flower strategy and ClientApp in process (no SuperLink)."""

from __future__ import annotations

import pytest


class FakeGrid:
    """The part of Flower's Grid that the strategy's node selection reads."""

    def __init__(self, node_ids):
        self.node_ids = list(node_ids)

    def get_node_ids(self):
        return self.node_ids


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """Messages outside a running ServerApp need the identity Flower's runtime would set. Import this fixture
    into a test module (``from flowertest import task_identity``) to apply it to every test there."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attr, value, raising=False)
