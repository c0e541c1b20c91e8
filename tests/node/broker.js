// One shardlog broker process for the kafkajs tests: the binary from SHARDLOG_BIN, listening on
// 127.0.0.1 (an ephemeral port unless one is asked for), its log in a temporary directory that
// survives restarts. `stop()` (SIGTERM) and `kill()` (SIGKILL, a crash) end it; every broker
// started here is killed when the test process exits, whatever happens.
'use strict'

const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const READY = /^shardlog: listening on 127\.0\.0\.1:(\d+)\s*$/m
const START_TIMEOUT_MS = 30000
const all = new Set()

process.on('exit', () => {
  for (const b of all) b.killNow()
})

function binary () {
  const bin = process.env.SHARDLOG_BIN
  if (!bin) throw new Error('SHARDLOG_BIN is not set: point it at the built shardlog binary')
  return bin
}

class Broker {
  constructor (settings = {}) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shardlog-kafkajs-'))
    this.settings = settings
    this.proc = null
    this.port = 0
    this.generation = 0
    all.add(this)
  }

  get bootstrap () {
    return `127.0.0.1:${this.port}`
  }

  async start (port = 0) {
    this.generation += 1
    const args = ['broker', '--set', `listeners=PLAINTEXT://127.0.0.1:${port}`, '--set', `log.dirs=${path.join(this.dir, 'data')}`, '--cores', '1']
    for (const [k, v] of Object.entries(this.settings)) args.push('--set', `${k}=${v}`)
    const stderr = fs.openSync(path.join(this.dir, `stderr.${this.generation}.log`), 'w')
    const proc = spawn(binary(), args, { stdio: ['ignore', 'pipe', stderr], cwd: this.dir })
    fs.closeSync(stderr)
    this.proc = proc
    let out = ''
    this.port = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`shardlog not ready after ${START_TIMEOUT_MS} ms: ${this.stderrTail()}`)), START_TIMEOUT_MS)
      proc.stdout.on('data', (chunk) => {
        out += chunk
        const m = READY.exec(out)
        if (m) {
          clearTimeout(timer)
          resolve(Number(m[1]))
        }
      })
      proc.on('exit', (code, signal) => {
        clearTimeout(timer)
        reject(new Error(`shardlog exited (${code ?? signal}) before it was ready: ${this.stderrTail()}`))
      })
    })
    proc.stdout.resume()
    return this
  }

  stderrTail () {
    try {
      const text = fs.readFileSync(path.join(this.dir, `stderr.${this.generation}.log`), 'utf8')
      return text.slice(-4000)
    } catch (e) {
      return ''
    }
  }

  async end (signal) {
    const proc = this.proc
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return
    const exited = new Promise((resolve) => proc.once('exit', resolve))
    proc.kill(signal)
    const timer = setTimeout(() => proc.kill('SIGKILL'), 15000)
    await exited
    clearTimeout(timer)
  }

  kill () {
    return this.end('SIGKILL')
  }

  stop () {
    return this.end('SIGTERM')
  }

  /** SIGKILL and start again on the same port and log. */
  async crashAndRestart () {
    const port = this.port
    await this.kill()
    await this.start(port)
  }

  killNow () {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL')
  }

  async close () {
    await this.stop()
    all.delete(this)
    fs.rmSync(this.dir, { recursive: true, force: true })
  }

  /** `shardlog <args...> --bootstrap <this broker>`, its stdout. */
  cli (...args) {
    return execFileSync(binary(), [...args, '--bootstrap', this.bootstrap], { encoding: 'utf8', timeout: 30000 })
  }
}

async function waitUntil (predicate, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs
  let last
  while (Date.now() < deadline) {
    try {
      last = await predicate()
      if (last) return last
    } catch (e) {
      last = e
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`)
}

module.exports = { Broker, waitUntil }
