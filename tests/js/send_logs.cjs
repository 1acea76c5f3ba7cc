// Send log records through the OpenTelemetry JS SDK's own OTLP log exporter, as an application would.
//   node send_logs.cjs PROTOCOL ENDPOINT COMPRESSION COUNT
// PROTOCOL: grpc | http-json | http-protobuf; ENDPOINT: the proxy's gRPC address (http://host:port) or
// its OTLP/HTTP logs URL; COMPRESSION: gzip | none. Prints what it emitted as one JSON line per record
// (bytes as {"bytes": [...]}) for the test to compare with what arrived, then exits 0 once the exporter
// reported every batch exported, 1 otherwise.
"use strict";
const { SeverityNumber } = require("@opentelemetry/api-logs");
const { LoggerProvider, BatchLogRecordProcessor } = require("@opentelemetry/sdk-logs");
const { resourceFromAttributes } = require("@opentelemetry/resources");

const [protocol, url, compression, countText] = process.argv.slice(2);
const exporters = {
  grpc: () => require("@opentelemetry/exporter-logs-otlp-grpc").OTLPLogExporter,
  "http-json": () => require("@opentelemetry/exporter-logs-otlp-http").OTLPLogExporter,
  "http-protobuf": () => require("@opentelemetry/exporter-logs-otlp-proto").OTLPLogExporter,
};
const Exporter = exporters[protocol]();
const exporter = new Exporter({ url, compression, timeoutMillis: 10000 });

let failures = 0;
const realExport = exporter.export.bind(exporter);
exporter.export = (records, done) =>
  realExport(records, (result) => {
    if (result.code !== 0) {
      failures += 1;
      console.error(`export failed: ${result.error}`);
    }
    done(result);
  });

const provider = new LoggerProvider({
  resource: resourceFromAttributes({ "service.name": "js-shop", "deployment.environment": "test" }),
  processors: [
    new BatchLogRecordProcessor({
      exporter,
      maxQueueSize: 10000,
      maxExportBatchSize: 200,
      scheduledDelayMillis: 50,
    }),
  ],
});
const logger = provider.getLogger("js-client", "1.2.3");

function recordFor(i) {
  const attributes = {
    "app.text": `Grüße ${i} — 日本語 🚀`,
    "app.int": i,
    "app.double": i + 0.5,
    "app.flag": i % 2 === 0,
    "app.tags": ["a", `b${i}`],
    "app.counts": [1, 2, i],
    "app.raw": new Uint8Array([0, 255, i % 256]),
    "app.ctx": { user: { id: i, roles: ["admin"] }, ok: true },
  };
  const body =
    i % 5 === 0
      ? { message: `payment ${i} failed`, code: i, details: { retry: false } }
      : `order ${i} placed by ユーザー ✓ for ${i * 3} EUR`;
  const warn = i % 7 === 0;
  return {
    severityNumber: warn ? SeverityNumber.WARN : SeverityNumber.INFO,
    severityText: warn ? "WARN" : "INFO",
    body,
    attributes,
  };
}

function printable(value) {
  if (value instanceof Uint8Array) return { bytes: Array.from(value) };
  if (Array.isArray(value)) return value.map(printable);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, printable(v)]));
  }
  return value;
}

async function main() {
  const count = Number(countText);
  for (let i = 0; i < count; i += 1) {
    const record = recordFor(i);
    logger.emit(record);
    process.stdout.write(`${JSON.stringify(printable(record))}\n`);
  }
  await provider.forceFlush();
  await provider.shutdown();
  process.exitCode = failures === 0 ? 0 : 1;
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
