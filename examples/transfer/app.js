// The transfer service: Express + pg, instrumented by tracing.js. POST /transfers moves
// money between two accounts in one transaction, asking the fraud service first; when
// the fraud service says no (a status, no exception) the handler answers 502, as most
// handlers do; when it does not answer in time the call fails with a timeout error.
// With NOTIFY_SMTP=host:port it sends a receipt by e-mail after each transfer (a raw SMTP
// conversation over net.Socket; a failure is logged, never the request's).
const express = require("express");
const http = require("http");
const net = require("net");
const { Pool } = require("pg");

const pool = new Pool({ connectionString: process.env.DATABASE_URL });
const FRAUD_URL = new URL(process.env.FRAUD_URL || "http://127.0.0.1:9200");
const FRAUD_TIMEOUT_MS = Number(process.env.FRAUD_TIMEOUT_MS || 1000);

/** Asks the fraud service about a transfer; resolves with its HTTP status. */
function fraudCheck(transfer) {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify(transfer);
    const req = http.request(
      {
        hostname: FRAUD_URL.hostname,
        port: FRAUD_URL.port,
        path: "/check",
        method: "POST",
        headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) },
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode));
      },
    );
    req.setTimeout(FRAUD_TIMEOUT_MS, () => {
      const err = new Error(`fraud check timed out after ${FRAUD_TIMEOUT_MS}ms`);
      err.code = "ETIMEDOUT";
      req.destroy(err);
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** Sends a receipt: connects to NOTIFY_SMTP and waits for its greeting (fire and forget). */
function notify(transfer) {
  const target = process.env.NOTIFY_SMTP;
  if (!target) return;
  const [host, port] = target.split(":");
  const socket = net.connect({ host, port: Number(port) }, () => {
    socket.once("data", () => socket.end(`HELO transfer\r\nQUIT\r\n`));
  });
  socket.setTimeout(2000, () => socket.destroy());
  socket.on("error", (err) => console.error(`receipt for transfer ${transfer.id} not sent: ${err.message}`));
}

async function transfer(req, res, next) {
  const { from, to, amount } = req.body;
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await client.query(
      "UPDATE accounts SET balance = balance - $1, updated_at = now() WHERE id = $2",
      [amount, from],
    );
    await client.query(
      "UPDATE accounts SET balance = balance + $1, updated_at = now() WHERE id = $2",
      [amount, to],
    );
    const { rows } = await client.query(
      "INSERT INTO transfers (from_id, to_id, amount) VALUES ($1, $2, $3) RETURNING id, ref, created_at",
      [from, to, amount],
    );
    const status = await fraudCheck({ from, to, amount });
    if (status !== 200) {
      await client.query("ROLLBACK");
      return res.status(502).json({ error: `fraud check answered ${status}` });
    }
    await client.query("COMMIT");
    res.status(201).json({ id: rows[0].id, ref: rows[0].ref, created_at: rows[0].created_at });
    notify(rows[0]);
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    next(err);
  } finally {
    client.release();
  }
}

const app = express();
app.use(express.json());
app.get("/health", (_req, res) => res.send("ok"));
app.post("/transfers", transfer);
app.use((err, _req, res, _next) => res.status(500).json({ error: err.message }));

const port = Number(process.env.PORT || 8000);
app.listen(port, process.env.HOST || "127.0.0.1", () => console.log(`listening on ${port}`));
