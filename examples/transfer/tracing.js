// OpenTelemetry's official JS SDK, set up as its README shows: OTLP/HTTP protobuf to
// OTEL_EXPORTER_OTLP_ENDPOINT (flux proxy --otlp), the http, express and pg
// instrumentations, and pg's sqlcommenter so each statement carries its span's
// traceparent (Flux ties it to the request). Loaded with `node --require ./tracing.js`.
const { NodeSDK } = require("@opentelemetry/sdk-node");
const { OTLPTraceExporter } = require("@opentelemetry/exporter-trace-otlp-proto");
const { HttpInstrumentation } = require("@opentelemetry/instrumentation-http");
const { ExpressInstrumentation } = require("@opentelemetry/instrumentation-express");
const { PgInstrumentation } = require("@opentelemetry/instrumentation-pg");

const sdk = new NodeSDK({
  serviceName: process.env.OTEL_SERVICE_NAME || "transfer",
  traceExporter: new OTLPTraceExporter(),
  instrumentations: [
    new HttpInstrumentation(),
    new ExpressInstrumentation(),
    new PgInstrumentation({ addSqlCommenterCommentToQueries: true }),
  ],
});
sdk.start();

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => sdk.shutdown().finally(() => process.exit(0)));
}
