"""A source's run, in four steps that Airflow runs as tasks and ``medtrinity run`` runs in a loop:

    plan.plan_shards -> shard.process_shard (one per shard, on Ray) -> publish.gate_source -> publish.publish_source

``pipeline`` holds the stages a shard runs, ``accounting`` what the steps hand each other and write,
``local`` the loop without Airflow. Each step takes and returns small JSON-able dicts (URIs, counts,
reasons), never images, so the same functions serve the Airflow tasks, the command and the tests.
This package imports none of its modules, so a step imports only what it needs.
"""
