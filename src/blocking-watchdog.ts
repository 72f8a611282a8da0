// The program of noEventLoopBlocking()'s watchdog Worker, and the memory it
// shares with the thread it watches. It is source text run with
// `new Worker(source, { eval: true })`, so that it loads the same way from
// dist/ (CommonJS or ES entry), from src/ under a test runner, and inside
// Jest's module sandbox: nothing here is resolved from a file.
//
// The watched thread beats: it writes the time into BEAT_AT every quarter of
// the threshold (blocking.ts). The watchdog sleeps until the last beat is a
// threshold old; if no newer beat came, the loop is blocked, and it samples
// the watched thread while it still is:
//   1. its native stack, with threadleak's addon (a thread blocked in a system
//      call is read from what the kernel shows, without a signal, so no call
//      of it is interrupted: the same rule as a leak report);
//   2. its JavaScript stack, with Runtime.evaluate over an inspector session
//      connected to the main thread. The inspector interrupts the isolate,
//      so the expression runs in the middle of the busy JavaScript; inside a
//      native call it runs only when the call returns (the sample says how
//      late). The expression calls the function blocking.ts installed, which
//      returns nothing once the thread has beaten again: a stack taken after
//      the block would name the wrong code.
// It samples again every threshold while the same block goes on. Every
// sample goes to the watched thread over a MessagePort, read there with
// receiveMessageOnPort (a 'message' listener would keep the process alive).
// CAPTURING holds the block's epoch while a sample of it is under way, so a
// scope that closes waits for it (bounded) instead of losing it.
//
// Life cycle: READY once the thread runs; CONNECT=1 connects the session,
// RUN=1 watches; CONNECT=0 disconnects it and parks the thread (a later scope
// reuses it). QUIT=1, at exit or long after the last scope, makes the thread
// disconnect and end by itself (ENDED, then process.exit() in the Worker).
// Once it runs, it is never stopped from outside: Node aborts when a Worker
// is terminated while the main thread still dispatches that session's last
// messages, and under wine a process was seen (twice in about 390 exits) to
// stay alive after its 'exit' event, its main thread joining a terminated
// watchdog that still waited in Atomics.wait.

import type { MessagePort } from 'node:worker_threads';

/** Int32 slots. */
export const RUN = 0; // 1 while a scope is open: sample (set by the watched thread)
export const STATE = 1; // the watchdog's session: PARKED, CONNECTING, CONNECTED, ENDED
export const EPOCH = 2; // how many times the watched thread beat
export const CAPTURING = 3; // the epoch a sample is being taken of, or -1
export const READY = 4; // 1 once the watchdog's thread runs and said its key
export const CONNECT = 5; // 1 while the watched thread wants a session kept
export const QUIT = 6; // 1 once the watchdog's thread is to end (CONNECT is 0 then too)
export const INT32_SLOTS = 8;
/** Float64 slots, after the Int32 ones. */
export const BEAT_AT = 0; // ms on the process's monotonic clock (process.hrtime)
export const THRESHOLD = 1; // ms: the smallest threshold of the open scopes
export const FLOAT64_SLOTS = 2;
export const SHARED_BYTES = INT32_SLOTS * 4 + FLOAT64_SLOTS * 8;

export const PARKED = 0; // no session
export const CONNECTING = 1;
export const CONNECTED = 2;
export const ENDED = 3; // QUIT seen, no session: the thread is ending

/** Where the watched thread's stack function is found, by the watchdog's expression. */
export const CAPTURE_SYMBOL = 'threadleak.eventLoopStack';

/** What the watchdog is given (workerData). */
export interface WatchdogData {
  shared: SharedArrayBuffer;
  port: MessagePort;
  /** The addon's file, or '' (then no native stacks). */
  addonPath: string;
  /** The watched thread. */
  target: { id: number; key: string };
  /** Read JavaScript stacks (the watched thread is the main thread), and the id of its stack function. */
  jsStacks: boolean;
  captureId: string;
}

/** The messages the watchdog posts. */
export type WatchdogMessage =
  | { type: 'ready'; key: string; addonError: string }
  | { type: 'native'; epoch: number; sample: number; at: number; raw?: unknown }
  | { type: 'js'; epoch: number; samples: number[]; stack?: string; error?: string; delayMs: number; late: boolean }
  | { type: 'no-session'; error: string };

// A JavaScript stack answered later than this after it was asked for was not
// taken while the thread ran JavaScript, but when a native call returned.
const LATE_MS = 50;
// How long an answer is awaited before the thread is taken to be in native code.
const QUICK_MS = 10;

export const WATCHDOG_SOURCE = `'use strict';
const { workerData } = require('node:worker_threads');
const inspector = require('node:inspector');
const { shared, port, addonPath, target, jsStacks, captureId } = workerData;
const ctl = new Int32Array(shared, 0, ${INT32_SLOTS});
const times = new Float64Array(shared, ${INT32_SLOTS * 4}, ${FLOAT64_SLOTS});
const hrtime = process.hrtime.bigint;
const now = () => Number(hrtime()) / 1e6;
const wallNow = () => performance.timeOrigin + performance.now();
let addon = null;
let addonError = '';
try {
  if (addonPath) addon = require(addonPath);
} catch (error) {
  addonError = String((error && error.message) || error);
}
let key = '';
try {
  if (addon) key = addon.threadKey(addon.currentThreadId());
} catch {}
port.postMessage({ type: 'ready', key, addonError });
Atomics.store(ctl, ${READY}, 1);
Atomics.notify(ctl, ${READY});

// Every rejection is caught: an unhandled one in a Worker being terminated aborts Node 20.
process.on('unhandledRejection', () => {});
// A pending session.post() does not keep a Worker alive: this timer does
// (this thread's own loop only; the Worker is unref'd in its parent).
const keepAlive = setInterval(() => {}, 1 << 30);
const quitting = () => Atomics.load(ctl, ${QUIT}) === 1;

// Ends this thread from inside it, its session already disconnected.
function quit() {
  clearInterval(keepAlive);
  Atomics.store(ctl, ${STATE}, ${ENDED});
  Atomics.notify(ctl, ${STATE});
  process.exit(0);
}

// The thread's native stack, with what the kernel shows (timeout 0: no signal;
// on Windows and macOS the whole stack, by suspending it) or, with a timeout,
// by the signal probe too (Linux).
function nativeStack(timeoutMs) {
  if (!addon) return undefined;
  try {
    return addon.captureStack(target.id, timeoutMs, target.key);
  } catch (error) {
    return { frames: [], error: 'os-error', detail: String((error && error.message) || error) };
  }
}

// The stack function is on the main context's global, or, when threadleak
// runs in a vm context of its own (Jest), on the node:worker_threads module:
// reached with process.getBuiltinModule (Node 20.16+, 22.3+) or the inspector's
// command-line require (includeCommandLineAPI below), which every Node has.
const stackSymbol = 'Symbol.for(${JSON.stringify(CAPTURE_SYMBOL)})';
const expression = (epoch) =>
  '(globalThis[' + stackSymbol + '] ?? ' +
  '(process.getBuiltinModule?.("node:worker_threads") ?? (typeof require === "function" ? require("node:worker_threads") : undefined))?.[' + stackSymbol + '])' +
  '?.[' + JSON.stringify(captureId) + ']?.(' + epoch + ')';

function evaluate(session, epoch) {
  return new Promise((resolve) => {
    try {
      session.post('Runtime.evaluate', { expression: expression(epoch), returnByValue: true, silent: true, includeCommandLineAPI: true }, (error, result) => {
        if (error) resolve({ error: String(error.message || error) });
        else if (result.exceptionDetails) {
          const e = result.exceptionDetails;
          resolve({ error: String((e.exception && e.exception.description) || e.text) });
        } else {
          const value = result.result && result.result.value;
          resolve(typeof value === 'string' ? { stack: value } : value === undefined ? { error: 'no-function' } : {});
        }
      });
    } catch (error) {
      resolve({ error: String((error && error.message) || error) });
    }
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
let evaluating = false;
let waiting = [];
let sampleSeq = 0;

async function watch(session) {
  let sampledEpoch = -1;
  let sampledAt = 0;
  while (Atomics.load(ctl, ${CONNECT}) === 1) {
    if (Atomics.load(ctl, ${RUN}) === 0) {
      Atomics.wait(ctl, ${RUN}, 0, 1000);
      continue;
    }
    const epoch = Atomics.load(ctl, ${EPOCH});
    const threshold = times[${THRESHOLD}];
    const t = now();
    const due = epoch === sampledEpoch ? sampledAt + threshold : times[${BEAT_AT}] + threshold;
    if (t < due) {
      const wait = Math.max(1, Math.ceil(due - t));
      // While an evaluation is pending, this thread's loop must run to receive it.
      if (evaluating) await sleep(Math.min(wait, 10));
      else Atomics.wait(ctl, ${EPOCH}, epoch, wait);
      continue;
    }
    Atomics.store(ctl, ${CAPTURING}, epoch);
    if (Atomics.load(ctl, ${EPOCH}) !== epoch) {
      // It beat meanwhile: no block (the scope that closed did not wait for this).
      doneCapturing();
      continue;
    }
    sampledEpoch = epoch;
    sampledAt = t;
    await takeSample(session, epoch, ++sampleSeq);
    doneCapturing();
  }
}

// One look at the blocked thread. The JavaScript stack is asked for first: in
// JavaScript the answer comes within a ms or two, and then no signal is sent.
// A thread that shows nothing to the kernel and has not answered after
// QUICK_MS runs native code (a parser, a hash): its native stack is probed
// then, and its JavaScript stack comes when the native call returns. A thread
// blocked in a system call is read from the kernel's view alone.
async function takeSample(session, epoch, sample) {
  const at = wallNow();
  const quiet = nativeStack(0);
  const inKernel = quiet !== undefined && quiet.frames.length > 0;
  let job = null;
  if (session && !evaluating) {
    evaluating = true;
    waiting = [sample];
    const asked = now();
    const current = { answer: undefined, nativePosted: false };
    job = current;
    const answered = evaluate(session, epoch).then((result) => {
      evaluating = false;
      const delayMs = now() - asked;
      current.answer = { type: 'js', epoch, samples: waiting, delayMs, late: delayMs > ${LATE_MS}, ...result };
      // Its native sample first: the answer belongs to it.
      if (current.nativePosted) {
        port.postMessage(current.answer);
        doneCapturing();
      }
    });
    if (!inKernel) await Promise.race([answered, sleep(${QUICK_MS})]);
  } else if (evaluating) {
    waiting.push(sample);
  }
  const raw = inKernel || quiet === undefined || (job && job.answer) ? quiet : nativeStack(100);
  port.postMessage({ type: 'native', epoch, sample, at, raw });
  if (job) {
    job.nativePosted = true;
    if (job.answer) port.postMessage(job.answer);
  }
}

// CAPTURING stays set while an evaluation is pending: its answer is part of the sample.
function doneCapturing() {
  if (evaluating) return;
  Atomics.store(ctl, ${CAPTURING}, -1);
  Atomics.notify(ctl, ${CAPTURING});
}

// A session whose first answer came: from then on an evaluation reaches the
// thread while it runs JavaScript (the watched thread waits for this, so that
// a block right after a scope opens is seen).
async function connect() {
  if (!jsStacks) return null;
  let session;
  try {
    session = new inspector.Session();
    session.connectToMainThread();
  } catch (error) {
    port.postMessage({ type: 'no-session', error: String((error && error.message) || error) });
    return null;
  }
  await new Promise((resolve) => {
    try {
      session.post('Runtime.evaluate', { expression: '0', silent: true }, () => resolve());
    } catch {
      resolve();
    }
  });
  return session;
}

(async () => {
  for (;;) {
    while (Atomics.load(ctl, ${CONNECT}) === 0 && !quitting()) Atomics.wait(ctl, ${CONNECT}, 0, 1000);
    if (quitting()) return quit();
    Atomics.store(ctl, ${STATE}, ${CONNECTING});
    const session = await connect();
    Atomics.store(ctl, ${STATE}, ${CONNECTED});
    Atomics.notify(ctl, ${STATE});
    await watch(session);
    try {
      if (session) session.disconnect();
    } catch {}
    Atomics.store(ctl, ${STATE}, ${PARKED});
    Atomics.notify(ctl, ${STATE});
  }
})().catch(() => {});
`;
