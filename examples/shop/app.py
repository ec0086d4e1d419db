"""The example shop: a small Flask app that Flux watches.

Its only Flux-specific setting is where things go: DATABASE_URL points at `flux proxy`, and
OTEL_EXPORTER_OTLP_ENDPOINT at the proxy's --otlp address. Everything else is stock
OpenTelemetry: the official SDK, Flask and requests instrumentation, and psycopg2
instrumentation with sqlcommenter, which appends each statement's traceparent so Flux can
tie the statement (and every row it changed) to the request and the span that ran it.

Endpoints:
  POST /users                 {"id", "email", "name"?}   -> 201
  POST /users/<id>/upgrade    {"plan"}                   -> 200
  GET  /users/<id>                                       -> 200 / 404
  POST /checkout              {"user_id", "amount"}      -> 201, or 500 when the payment
      call times out; the order and the plan change it wrote are then rolled back. A paid
      order gets a confirmation e-mail (appended to SHOP_OUTBOX when set).
  GET  /health                                           -> 200

Under `flux incident replay` (FLUX_REPLAY=1) the shop sends no e-mail: replay re-runs
recorded requests, and a customer must not get a second confirmation. Outbound HTTP needs
no such care: replay points HTTP_PROXY at its stub, which answers from the recording.
"""

import os

import psycopg2
import requests
from flask import Flask, jsonify, request
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("shop")

Psycopg2Instrumentor().instrument(enable_commenter=True, commenter_options={})
RequestsInstrumentor().instrument()

app = Flask(__name__)
FlaskInstrumentor().instrument_app(app)

DATABASE_URL = os.environ["DATABASE_URL"]
PAYMENT_URL = os.environ.get("PAYMENT_URL", "http://127.0.0.1:9100")
PAYMENT_TIMEOUT = float(os.environ.get("PAYMENT_TIMEOUT", "1"))
PAYMENT_ATTEMPTS = 1
OUTBOX = os.environ.get("SHOP_OUTBOX")
REPLAY = os.environ.get("FLUX_REPLAY") == "1"


def connect():
    return psycopg2.connect(DATABASE_URL)


@app.post("/users")
def create_user():
    body = request.get_json(force=True)
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO users (id, email, name) VALUES (%s, %s, %s)",
            (body["id"], body["email"], body.get("name")),
        )
    return jsonify(id=body["id"]), 201


@app.post("/users/<int:user_id>/upgrade")
def upgrade(user_id):
    body = request.get_json(force=True)
    with connect() as conn, conn.cursor() as cur:
        cur.execute("UPDATE users SET plan = %s WHERE id = %s", (body["plan"], user_id))
    return jsonify(id=user_id, plan=body["plan"])


@app.get("/users/<int:user_id>")
def get_user(user_id):
    with connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT id, email, name, plan FROM users WHERE id = %s", (user_id,))
        row = cur.fetchone()
    if row is None:
        return jsonify(error="not found"), 404
    return jsonify(dict(zip(("id", "email", "name", "plan"), row)))


@app.get("/health")
def health():
    return jsonify(ok=True)


def charge(amount):
    with tracer.start_as_current_span("payment.charge") as span:
        span.set_attribute("payment.amount", amount)
        for attempt in range(1, PAYMENT_ATTEMPTS + 1):
            try:
                reply = requests.post(
                    PAYMENT_URL + "/charge", json={"amount": amount}, timeout=PAYMENT_TIMEOUT
                )
                reply.raise_for_status()
                return reply.json()["id"]
            except (requests.Timeout, requests.ConnectionError):
                if attempt == PAYMENT_ATTEMPTS:
                    raise


def send_confirmation(user_id, order_id):
    if REPLAY:
        app.logger.info("replay: no confirmation e-mail for order %s", order_id)
        return
    with tracer.start_as_current_span("send_confirmation"):
        if OUTBOX:
            with open(OUTBOX, "a") as out:
                out.write(f"to user {user_id}: order {order_id} is paid\n")


@app.post("/checkout")
def checkout():
    body = request.get_json(force=True)
    user_id, amount = body["user_id"], int(body["amount"])
    conn = connect()
    try:
        with conn.cursor() as cur:
            with tracer.start_as_current_span("create_order"):
                cur.execute(
                    "INSERT INTO orders (user_id, amount, status) VALUES (%s, %s, 'pending') RETURNING id",
                    (user_id, amount),
                )
                order_id = cur.fetchone()[0]
                cur.execute("UPDATE users SET plan = 'pro' WHERE id = %s", (user_id,))
            # Written first, paid second: a failed payment must undo both writes.
            charge_id = charge(amount)
            cur.execute("UPDATE orders SET status = 'paid' WHERE id = %s", (order_id,))
        conn.commit()
        send_confirmation(user_id, order_id)
        return jsonify(order=order_id, charge=charge_id), 201
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.close()


if __name__ == "__main__":
    # HOST=0.0.0.0 in a container (docker/compose.yml); loopback otherwise.
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000")), threaded=True)
