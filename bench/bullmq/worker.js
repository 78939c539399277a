// BullMQ baseline of the `core` bench: one Node worker running a no-op job at the given concurrency.
// Usage: node worker.js REDIS_URL PREFIX QUEUE CONCURRENCY
// Prints "ready" once connected; closes gracefully on SIGTERM/SIGINT.
"use strict";
const { Worker } = require("bullmq");

const [url, prefix, queue, concurrency] = process.argv.slice(2);
const connection = { url, maxRetriesPerRequest: null };
const worker = new Worker(queue, async () => {}, {
  connection,
  prefix,
  concurrency: Number(concurrency),
  removeOnComplete: { count: 0 },
  removeOnFail: { count: 0 },
});
worker.on("error", (err) => console.error("worker error:", err.message));

async function stop() {
  await worker.close();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

worker.waitUntilReady().then(() => console.log("ready"));
