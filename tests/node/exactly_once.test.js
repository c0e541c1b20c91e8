// kafkajs 2.2.4 against shardlog: an idempotent producer through three broker SIGKILLs,
// consume-transform-produce exactly once (kafkajs' own consumer group, transactional producer,
// sendOffsets) through aborts and a SIGKILL, fencing by a second producer with the same
// transactional id, and a transaction left open until the coordinator aborts it. Everything is
// read back with kafkajs consumers at the isolation level the check needs.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { randomUUID } = require('node:crypto')
const { Kafka, logLevel } = require('kafkajs')
const { Broker, waitUntil } = require('./broker')

const SETTINGS = {
  'group.initial.rebalance.delay.ms': '0',
  'transaction.abort.timed.out.transaction.cleanup.interval.ms': '200'
}
const unique = (prefix) => `${prefix}-${randomUUID().slice(0, 8)}`
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function client (broker) {
  return new Kafka({
    clientId: 'shardlog-kafkajs',
    brokers: [broker.bootstrap],
    logLevel: logLevel.NOTHING,
    retry: { initialRetryTime: 100, maxRetryTime: 2000, retries: 30 }
  })
}

async function createTopic (kafka, topic, numPartitions) {
  const admin = kafka.admin()
  await admin.connect()
  try {
    assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions }], waitForLeaders: true }), true)
  } finally {
    await admin.disconnect()
  }
}

/** Every record of `topic` a fresh consumer group sees: [{partition, offset, key, value}]. */
async function readAll (kafka, topic, expected, readUncommitted) {
  const consumer = kafka.consumer({ groupId: unique('reader'), readUncommitted, maxWaitTimeInMs: 100 })
  const out = []
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) {
        out.push({ partition: batch.partition, offset: Number(m.offset), key: m.key && m.key.toString(), value: m.value && m.value.toString() })
      }
    }
  })
  try {
    await waitUntil(() => out.length >= expected, `${expected} records of ${topic} (have ${out.length})`, 120000)
    await sleep(1000) // anything more would be a duplicate
  } finally {
    await consumer.disconnect()
  }
  return out
}

function checkExactlyOnce (records, n, what) {
  const seen = new Set()
  const last = new Map()
  for (const r of records) {
    const i = Number(r.key.slice(1))
    assert.equal(r.value, `v${i}`, `${what}: value at ${r.partition}@${r.offset}`)
    assert.ok(!seen.has(i), `${what}: k${i} twice (again at ${r.partition}@${r.offset})`)
    seen.add(i)
    assert.ok((last.get(r.partition) ?? -1) < i, `${what}: partition ${r.partition} out of order at k${i}`)
    last.set(r.partition, i)
  }
  assert.equal(seen.size, n, `${what}: ${seen.size} of ${n} records`)
}

function txnProducer (kafka, transactionalId, transactionTimeout = 60000) {
  return kafka.producer({ transactionalId, transactionTimeout, idempotent: true, maxInFlightRequests: 1 })
}

test('idempotent producer through three broker SIGKILLs: every record once, in order', { timeout: 300000 }, async () => {
  const broker = await new Broker(SETTINGS).start()
  try {
    const kafka = client(broker)
    const topic = unique('idem')
    const partitions = 8
    const n = 100000
    await createTopic(kafka, topic, partitions)
    const producer = kafka.producer({ idempotent: true, retry: { retries: Number.MAX_SAFE_INTEGER, maxRetryTime: 1000 } })
    await producer.connect()
    let kills = 0
    const batch = 1000
    for (let start = 0; start < n; start += batch) {
      const messages = []
      for (let i = start; i < start + batch; i++) messages.push({ key: `k${i}`, value: `v${i}`, partition: i % partitions })
      const sent = producer.send({ topic, acks: -1, messages })
      if (kills < 3 && start >= (n * (kills + 1)) / 4) {
        // Kill while this request is in flight: its answer is lost and kafkajs retries it.
        kills += 1
        await sleep(1)
        await broker.crashAndRestart()
      }
      await sent
    }
    await producer.disconnect()
    assert.equal(kills, 3)
    checkExactlyOnce(await readAll(kafka, topic, n, true), n, 'kafkajs idempotent')
  } finally {
    await broker.close()
  }
})

test('consume-transform-produce exactly once through aborts and a SIGKILL', { timeout: 300000 }, async () => {
  const broker = await new Broker(SETTINGS).start()
  try {
    const kafka = client(broker)
    const partitions = 4
    const n = 100000
    const perTxn = 1000
    const src = unique('eos-in')
    const dst = unique('eos-out')
    const group = unique('copier')
    const transactionalId = unique('copier')
    await createTopic(kafka, src, partitions)
    await createTopic(kafka, dst, partitions)
    const feeder = kafka.producer()
    await feeder.connect()
    for (let start = 0; start < n; start += 5000) {
      const messages = []
      for (let i = start; i < start + 5000; i++) messages.push({ key: `k${i}`, value: `v${i}`, partition: i % partitions })
      await feeder.send({ topic: src, acks: -1, messages })
    }
    await feeder.disconnect()

    let producer = txnProducer(kafka, transactionalId)
    await producer.connect()
    const consumer = kafka.consumer({ groupId: group, maxWaitTimeInMs: 100 })
    await consumer.connect()
    await consumer.subscribe({ topics: [src], fromBeginning: true })
    const done = new Map() // source partition -> next offset, from the commits seen to succeed
    const progress = () => [...done.values()].reduce((a, b) => a + b, 0)
    let txns = 0
    let aborted = 0
    let crashed = false
    const errors = []
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
        if (batch.messages.length === 0) return
        const messages = batch.messages.slice(0, perTxn)
        const first = messages[0].offset
        const next = (BigInt(messages[messages.length - 1].offset) + 1n).toString()
        if (!crashed && progress() >= n / 2) {
          crashed = true
          await broker.crashAndRestart()
        }
        let committed = false
        try {
          const txn = await producer.transaction()
          try {
            await txn.send({ topic: dst, messages: messages.map((m) => ({ key: m.key, value: m.value, partition: batch.partition })) })
            await txn.sendOffsets({ consumerGroupId: group, topics: [{ topic: src, partitions: [{ partition: batch.partition, offset: next }] }] })
            txns += 1
            if (txns % 7 === 0) {
              await txn.abort()
              aborted += 1
            } else {
              await txn.commit()
              committed = true
            }
          } catch (e) {
            errors.push(`${e.name}: ${e.message}`)
            if (txn.isActive()) await txn.abort().catch(() => {})
          }
        } catch (e) {
          errors.push(`${e.name}: ${e.message}`)
        }
        if (committed) {
          done.set(batch.partition, Number(next))
          resolveOffset(messages[messages.length - 1].offset)
          consumer.seek({ topic: src, partition: batch.partition, offset: next })
        } else {
          if (errors.length && /fenced|ProducerFenced|INVALID_PRODUCER_EPOCH|not in a valid state/i.test(errors[errors.length - 1])) {
            await producer.disconnect().catch(() => {})
            producer = txnProducer(kafka, transactionalId)
            await producer.connect()
          }
          // Not committed: read those records again.
          consumer.seek({ topic: src, partition: batch.partition, offset: first })
        }
        await heartbeat()
      }
    })
    try {
      await waitUntil(() => progress() >= n, `the copy (${progress()} of ${n}; errors ${errors.slice(0, 3)})`, 240000)
    } finally {
      await consumer.disconnect()
      await producer.disconnect()
    }
    assert.ok(crashed && aborted > 0, `crashed ${crashed}, aborted ${aborted}`)
    checkExactlyOnce(await readAll(kafka, dst, n, false), n, 'kafkajs read_committed')
    const everything = await readAll(kafka, dst, n + 1, true)
    assert.ok(everything.length > n, 'read_uncommitted shows the aborted copies too')
    const admin = kafka.admin()
    await admin.connect()
    const offsets = await admin.fetchOffsets({ groupId: group, topics: [src] })
    const ends = await admin.fetchTopicOffsets(src)
    await admin.disconnect()
    const committedOffsets = Object.fromEntries(offsets[0].partitions.map((p) => [p.partition, p.offset]))
    for (const p of ends) assert.equal(committedOffsets[p.partition], p.high, `group offset of partition ${p.partition}`)
  } finally {
    await broker.close()
  }
})

test('a second producer with the same transactional id fences the first', { timeout: 120000 }, async () => {
  const broker = await new Broker(SETTINGS).start()
  try {
    const kafka = client(broker)
    const topic = unique('fence')
    await createTopic(kafka, topic, 1)
    const id = unique('fence')
    const first = txnProducer(kafka, id)
    await first.connect()
    const t1 = await first.transaction()
    await t1.send({ topic, messages: Array.from({ length: 10 }, (_, i) => ({ key: `f${i}`, value: `first-${i}`, partition: 0 })) })
    const second = txnProducer(kafka, id)
    await second.connect()
    const t2 = await second.transaction()
    await t2.send({ topic, messages: Array.from({ length: 10 }, (_, i) => ({ key: `s${i}`, value: `second-${i}`, partition: 0 })) })
    await t2.commit()
    await assert.rejects(t1.commit(), (e) => /fenced|epoch/i.test(`${e.type} ${e.message}`))
    await first.disconnect()
    await second.disconnect()
    const visible = await readAll(kafka, topic, 10, false)
    assert.deepEqual(visible.map((r) => r.value).sort(), Array.from({ length: 10 }, (_, i) => `second-${i}`).sort())
    assert.equal((await readAll(kafka, topic, 20, true)).length, 20)
  } finally {
    await broker.close()
  }
})

test('an abandoned transaction times out, its producer is fenced, readers move on', { timeout: 120000 }, async () => {
  const broker = await new Broker(SETTINGS).start()
  try {
    const kafka = client(broker)
    const topic = unique('timeout')
    await createTopic(kafka, topic, 1)
    const id = unique('stuck')
    const stuck = txnProducer(kafka, id, 1500)
    await stuck.connect()
    const txn = await stuck.transaction()
    await txn.send({ topic, messages: Array.from({ length: 5 }, (_, i) => ({ value: `stuck-${i}`, partition: 0 })) })
    await waitUntil(() => /CompleteAbort/.test(broker.cli('transactions', 'describe', id)), 'the coordinator to abort the timed-out transaction', 20000)
    const after = txnProducer(kafka, unique('after'))
    await after.connect()
    const t2 = await after.transaction()
    await t2.send({ topic, messages: [{ key: 'after', value: 'after', partition: 0 }] })
    await t2.commit()
    await after.disconnect()
    const visible = await readAll(kafka, topic, 1, false)
    assert.deepEqual(visible.map((r) => r.value), ['after'], 'read_committed moves on past the aborted records')
    await assert.rejects(txn.commit())
    await stuck.disconnect()
  } finally {
    await broker.close()
  }
})
