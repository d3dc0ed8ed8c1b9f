"""What only the DAG files and the plugin use: the Airflow assets, the failure callbacks and the
tasks' defaults. Nothing else in the library imports this package, so the library works without
Airflow; what these modules need from Airflow they import lazily, where the DAG files import them."""
