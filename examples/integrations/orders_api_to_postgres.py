"""A pipeline that reaches three systems, with its credentials only in Connections.

It pulls the day's orders as JSON from an HTTP API, stages them in PostgreSQL, merges them into the
orders table with plain SQL, and emails the data team when the run fails. Nothing here names a
host, a login or a password: they live in three connections, set once (encrypted in the
metastore), and the workers that run these tasks hold no database URL at all.

    hareflow connections add orders_api --uri 'https://api.example.com?__extra__={"bearer_token": "..."}'
    hareflow connections add warehouse  --uri 'postgresql://loader:...@db.internal:5432/sales'
    hareflow connections add smtp_alerts --uri 'smtp://alerts:...@mail.internal:587?starttls=true&from=hareflow%40example.com'
    hareflow variables set orders_min_amount 0

Then `hareflow dags trigger orders_api_to_postgres` (or give it a schedule).
"""

from hareflow import DAG, EmailNotifier, HttpTask, SqlTask, task
from hareflow.providers.sql import SqlHook

TABLES = [
    "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, "
    "amount NUMERIC(12, 2) NOT NULL, day DATE NOT NULL)",
    "CREATE TABLE IF NOT EXISTS orders_staging (id INTEGER, customer TEXT, amount NUMERIC(12, 2), day DATE)",
]

MERGE = [
    "INSERT INTO orders (id, customer, amount, day) "
    "SELECT id, customer, amount, day FROM orders_staging WHERE amount >= :min_amount "
    "ON CONFLICT (id) DO UPDATE SET customer = EXCLUDED.customer, amount = EXCLUDED.amount, "
    "day = EXCLUDED.day",
    "DELETE FROM orders_staging",
]

with DAG(
    "orders_api_to_postgres",
    schedule=None,
    tags=["integrations"],
    default_args={"retries": 1, "retry_delay": 5},
    on_failure_callback=EmailNotifier(
        to="data-team@example.com",
        conn_id="smtp_alerts",
        subject="[hareflow] {{ dag_id }} failed on {{ ds }}",
    ),
):
    tables = SqlTask("create_tables", "warehouse", TABLES)

    fetch = HttpTask(
        "fetch_orders",
        "orders_api",
        path="/orders",
        params={"day": "{{ ds }}"},
        response_check=lambda response: isinstance(response.json(), list),
    )

    @task
    def stage(orders, ds=None):
        """Replace the staging rows with the fetched ones."""
        rows = [(o["id"], o["customer"], o["amount"], ds) for o in orders]
        with SqlHook("warehouse") as hook:
            hook.run("DELETE FROM orders_staging")
            hook.insert_rows("orders_staging", rows, target_fields=["id", "customer", "amount", "day"])
        print(f"staged {len(rows)} orders for {ds}")
        return len(rows)

    merge = SqlTask(
        "merge_orders", "warehouse", MERGE, parameters={"min_amount": "{{ var.value.orders_min_amount }}"}
    )

    tables >> fetch
    stage(fetch.output) >> merge
