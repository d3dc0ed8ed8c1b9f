"""Stage doubles for the runners' tests: one that records where its setup ran, one whose batches fail."""

import os

from medtrinity_tasks.stages import Resources, Stage


class CountSetups(Stage):
    """Records which process ran ``setup``, to show it runs once per actor, not per batch."""

    name = "count_setups"
    batch_size = 2

    def setup(self):
        self.pid = os.getpid()

    def process_batch(self, rows):
        return [dict(row, organ=f"setup-pid-{self.pid}") for row in rows]


class Explodes(Stage):
    name = "explodes"
    resources = Resources(cpus=0.5)
    batch_size = 2

    def process_batch(self, rows):
        if any(row["source_relpath"].endswith("1") for row in rows):
            raise ValueError("model crashed")
        return rows


ROWS = [{"source_id": "t", "source_relpath": f"in/{i}"} for i in range(6)]


class ExplodesInAnActor(CountSetups):
    def process_batch(self, rows):
        return Explodes.process_batch(self, super().process_batch(rows))
