"""The Airflow assets the DAGs publish and schedule on (imported by DAG files only: needs Airflow)."""

from __future__ import annotations

from airflow.sdk import Asset


def source_asset(source_id: str) -> Asset:
    """Updated by a source DAG's publish task; the dataset DAG is scheduled on these."""
    return Asset(name=f"medtrinity__{source_id}", uri=f"medtrinity://sources/{source_id}")


DATASET_ASSET = Asset(name="medtrinity_dataset", uri="medtrinity://dataset")
"""Updated when the dataset manifest and card are rebuilt."""

KNOWLEDGE_ASSET = Asset(name="medtrinity_knowledge", uri="medtrinity://knowledge")
"""Updated when a corpus is indexed into the knowledge base."""
