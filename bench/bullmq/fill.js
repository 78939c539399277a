// Fills the BullMQ baseline's queue with no-op jobs (addBulk in chunks of 1,000, removeOnComplete).
// Usage: node fill.js REDIS_URL PREFIX QUEUE FIRST COUNT [--paused]
// With --paused the queue is paused first, so the jobs wait until the bench resumes it: they all become
// visible to the worker at one instant (as the Dramatiq side's RENAME does). Prints "filled COUNT".
"use strict";
const { Queue } = require("bullmq");

async function main() {
  const [url, prefix, name, first, count, flag] = process.argv.slice(2);
  const queue = new Queue(name, { connection: { url }, prefix });
  if (flag === "--paused") await queue.pause();
  const start = Number(first);
  const end = start + Number(count);
  for (let at = start; at < end; at += 1000) {
    const jobs = [];
    for (let n = at; n < Math.min(end, at + 1000); n++) {
      jobs.push({ name: "bench_noop", data: { n }, opts: { removeOnComplete: true, removeOnFail: true } });
    }
    await queue.addBulk(jobs);
  }
  await queue.close();
  console.log(`filled ${count}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
