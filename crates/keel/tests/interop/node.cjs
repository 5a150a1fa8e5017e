// Drives stock Node BullMQ for Keel's interop tests. Usage:
//   node node.cjs <cmd> <queue> <prefix> [arg]
// cmd: add | addn <n> | wait <id> | work <ms> (ok) | fail <ms> | get <id> | version
//      | pause | resume | counts | workers (connection names Queue.getWorkers() finds)
// NODE_PATH picks the BullMQ major (6 from shared/bench/bullmq-peer, 5 from ./bullmq5).
// REDIS_CLUSTER=host:port,host:port: on a Redis Cluster (ioredis' Cluster client, as BullMQ's
// documentation sets it up; the queue name carries its hash tag, `{name}`).
// Prints one JSON line. Every command is bounded in time.
const { Queue, Worker, QueueEvents } = require('bullmq');
const seeds = process.env.REDIS_CLUSTER;
const cluster = () => {
  const { Cluster } = require('ioredis');
  const nodes = seeds.split(',').map((a) => ({ host: a.split(':')[0], port: Number(a.split(':')[1]) }));
  return new Cluster(nodes, { redisOptions: { maxRetriesPerRequest: null } });
};
// A client each: on a cluster every BullMQ object gets its own Cluster client (closed at the end).
const clients = [];
const conn = () => {
  if (!seeds) return { host: '127.0.0.1', port: Number(process.env.REDIS_PORT || 6379) };
  const c = cluster();
  clients.push(c);
  return c;
};
const [cmd, name, prefix, arg] = process.argv.slice(2);
const opts = () => ({ connection: conn(), prefix });
const hardCap = setTimeout(() => { console.error('node helper: hard cap reached'); process.exit(3); }, 30000);
(async () => {
  if (cmd === 'add') {
    const q = new Queue(name, opts());
    const job = await q.add('from-node', { n: 1 }, { attempts: 1 });
    console.log(JSON.stringify({ id: job.id }));
    await q.close();
  } else if (cmd === 'wait') {
    const q = new Queue(name, opts());
    const qe = new QueueEvents(name, opts());
    await qe.waitUntilReady();
    const job = await q.getJob(arg);
    try {
      const rv = await job.waitUntilFinished(qe, 20000);
      console.log(JSON.stringify({ state: 'completed', returnvalue: rv }));
    } catch (e) {
      console.log(JSON.stringify({ state: 'failed', reason: e.message }));
    }
    await qe.close(); await q.close();
  } else if (cmd === 'work' || cmd === 'fail') {
    const w = new Worker(name, async (job) => {
      if (cmd === 'fail') throw new Error('node says no');
      return { echo: job.data, by: 'node' };
    }, { connection: conn(), prefix, name: 'node-worker' });
    await new Promise((r) => setTimeout(r, Number(arg || 3000)));
    await w.close();
    console.log(JSON.stringify({ done: true }));
  } else if (cmd === 'get') {
    const q = new Queue(name, opts());
    const job = await q.getJob(arg);
    const state = job ? await job.getState() : null;
    console.log(JSON.stringify(job ? { state, returnvalue: job.returnvalue, failedReason: job.failedReason, attemptsMade: job.attemptsMade, data: job.data } : null));
    await q.close();
  } else if (cmd === 'addjitter') {
    const q = new Queue(name, opts());
    const job = await q.add('from-node', { n: 1 }, { attempts: 3, backoff: { type: 'exponential', delay: 40, jitter: 0.5 } });
    console.log(JSON.stringify({ id: job.id }));
    await q.close();
  } else if (cmd === 'addn') {
    const q = new Queue(name, opts());
    const ids = [];
    for (let i = 0; i < Number(arg || 1); i++) {
      ids.push((await q.add('from-node', { i }, { attempts: 1 })).id);
    }
    console.log(JSON.stringify({ ids }));
    await q.close();
  } else if (cmd === 'pause' || cmd === 'resume') {
    const q = new Queue(name, opts());
    await (cmd === 'pause' ? q.pause() : q.resume());
    console.log(JSON.stringify({ paused: await q.isPaused() }));
    await q.close();
  } else if (cmd === 'counts') {
    const q = new Queue(name, opts());
    console.log(JSON.stringify(await q.getJobCounts('wait', 'paused', 'active', 'completed', 'failed', 'delayed', 'prioritized')));
    await q.close();
  } else if (cmd === 'workers') {
    const q = new Queue(name, opts());
    console.log(JSON.stringify({ workers: (await q.getWorkers()).map((w) => w.name) }));
    await q.close();
  } else if (cmd === 'version') {
    const q = new Queue(name, opts());
    console.log(JSON.stringify({ version: await q.getVersion() }));
    await q.close();
  } else {
    throw new Error(`unknown command ${cmd}`);
  }
  if (seeds) {
    // Cluster clients closed, bounded: the answer is printed already.
    await Promise.race([Promise.all(clients.map((c) => c.quit())), new Promise((r) => setTimeout(r, 2000))]);
    process.exit(0);
  }
  clearTimeout(hardCap);
})().catch((e) => { console.error(e); process.exit(1); });
