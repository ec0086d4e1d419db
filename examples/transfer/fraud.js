// A stand-in fraud service: POST /check answers 403 for amounts of 1000 and more, stalls
// for 5 s on an amount of 777 (the caller's 1 s timeout fires), else 200. GET /calls
// answers how many checks it was asked (tests prove a replay never reaches it).
const http = require("http");

const port = Number(process.argv[2] || 9200);
let calls = 0;
http
  .createServer((req, res) => {
    if (req.method === "GET" && req.url === "/calls") {
      const body = JSON.stringify({ calls });
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
      return res.end(body);
    }
    calls += 1;
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const { amount } = JSON.parse(body || "{}");
      const answer = (status, json) => {
        res.writeHead(status, { "Content-Type": "application/json" });
        res.end(JSON.stringify(json));
      };
      if (amount === 777) setTimeout(() => answer(200, { ok: true }), 5000);
      else if (amount >= 1000) answer(403, { error: "amount over the limit" });
      else answer(200, { ok: true });
    });
  })
  .listen(port, process.env.HOST || "127.0.0.1");
