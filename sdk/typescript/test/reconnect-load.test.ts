/**
 * Reconnect under load: several senders pipeline messages to one receiver while both
 * sides' connections are cut again and again. Every acknowledged message must reach the
 * receiver exactly once (no gap, no duplicate), each sender's messages in send order,
 * and every send must be acknowledged (resends after a cut are deduplicated by the
 * server, never stored twice).
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import { SentMessage, TernClient, TimelineEntry } from '../src/index.js';
import { startTern, TernServer, waitFor } from './server.js';

const SENDERS = 4;
const PER_SENDER = 150;
const CUTS_RECEIVER = 12;
const CUT_EVERY_MS = 120;

let tern: TernServer;
const clients: TernClient[] = [];

before(async () => {
  // Per-connection send and frame rates well above the default, so the test is about
  // reconnects rather than rate limiting (which the client retries through as well).
  tern = await startTern({ TERN_MESSAGES__SENDS_PER_SEC: '2000', TERN_GATEWAY__INBOUND_FRAMES_PER_SEC: '4000' });
  const ids = ['rx', ...Array.from({ length: SENDERS }, (_, i) => `tx${i}`)];
  await tern.importUsers(ids);
});

after(async () => {
  for (const c of clients) c.close();
  await tern?.stop();
});

it('every acked message arrives exactly once across reconnects of both sides', async () => {
  const rx = tern.client('rx');
  clients.push(rx);
  const got: TimelineEntry[] = [];
  rx.on('message', (m) => got.push(m));
  let logins = 0;
  rx.on('login', () => logins++);
  await rx.connect();

  const senders = await Promise.all(
    Array.from({ length: SENDERS }, async (_, i) => {
      const c = tern.client(`tx${i}`);
      clients.push(c);
      await c.connect();
      return c;
    }),
  );

  const started = Date.now();
  const sends: Promise<SentMessage>[] = [];
  // Sends go out in bursts while the cutter runs, so cuts land mid-stream on both sides.
  const producing = (async () => {
    for (let n = 0; n < PER_SENDER; n += 10) {
      for (const [i, c] of senders.entries()) {
        for (let k = n; k < Math.min(n + 10, PER_SENDER); k++) sends.push(c.sendText('rx', `tx${i}:${k}`));
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  const cutting = (async () => {
    for (let k = 0; k < CUTS_RECEIVER; k++) {
      // Each cut hits a logged-in connection (a cut during a login only adds backoff).
      await waitFor(() => rx.state === 'online', 'the receiver back online');
      await new Promise((r) => setTimeout(r, CUT_EVERY_MS));
      rx.reconnect();
      if (k % 3 === 0) senders[k % SENDERS].reconnect();
    }
  })();
  await Promise.all([producing, cutting]);
  const acked = await Promise.all(sends);
  assert.equal(acked.length, SENDERS * PER_SENDER);

  await waitFor(() => got.length >= acked.length, `all ${acked.length} messages at the receiver (got ${got.length})`, 30_000);
  // Let anything late (a duplicate) show up before judging.
  await new Promise((r) => setTimeout(r, 500));
  const elapsed = Date.now() - started;

  const byKey = new Map<bigint, number>();
  for (const m of got) byKey.set(m.messageKey, (byKey.get(m.messageKey) ?? 0) + 1);
  const dups = [...byKey.entries()].filter(([, n]) => n > 1);
  assert.deepEqual(dups, [], 'no message reported twice');
  const keys = new Set(acked.map((a) => a.messageKey));
  assert.equal(keys.size, acked.length, 'every send stored once (distinct keys)');
  const missing = [...keys].filter((k) => !byKey.has(k));
  assert.deepEqual(missing, [], 'no acked message missing');
  assert.equal(got.length, acked.length, 'nothing but the acked messages');

  // The receiver sees its timeline in seq order: pulls, then pushes, never a pushed
  // entry ahead of one the login's pull still had to bring.
  for (let i = 1; i < got.length; i++) {
    assert.ok(got[i].seq > got[i - 1].seq, `receiver order at ${i}: ${got[i - 1].seq} then ${got[i].seq}`);
  }
  // Every sender's messages, each once. (Send order is not asserted: a send retried
  // after a cut may be stored after later ones.)
  for (let i = 0; i < SENDERS; i++) {
    const mine = got.filter((m) => m.fromId === `tx${i}`).map((m) => Number(m.elems[0].text!.split(':')[1]));
    assert.deepEqual([...mine].sort((a, b) => a - b), Array.from({ length: PER_SENDER }, (_, k) => k));
  }
  assert.equal(logins, CUTS_RECEIVER + 1, 'the receiver logged in again after every cut');
  // Whether the server had to drop pushes (a full logic->gateway link queue) during the run.
  const metrics = await (await fetch(`${tern.http}/metrics`)).text();
  const dropped = metrics
    .split('\n')
    .filter((l) => l.startsWith('tern_link_frames_dropped_total'))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
  console.log(
    `reconnect-under-load: ${acked.length} messages from ${SENDERS} senders, receiver logins ${logins}, ` +
      `${elapsed} ms, each delivered exactly once (server link frames dropped: ${dropped})`,
  );
});

it('a long-lived connection syncs mid-session (holding pushes back meanwhile) without a gap or a duplicate', async () => {
  // Past 1,000 entries reported above the safe point the client pulls to move it on,
  // while pushes keep arriving: the same path a SyncNotify{Message} takes.
  await tern.importUsers(['rx2', 'tx9']);
  const rx = tern.client('rx2');
  const tx = tern.client('tx9');
  clients.push(rx, tx);
  const got: TimelineEntry[] = [];
  rx.on('message', (m) => got.push(m));
  await rx.connect();
  await tx.connect();
  const safeAtStart = rx.inboxSeq;
  const N = 1_200;
  const sends: Promise<SentMessage>[] = [];
  for (let k = 0; k < N; k++) {
    sends.push(tx.sendText('rx2', `m${k}`));
    if (k % 50 === 49) await new Promise((r) => setTimeout(r, 5));
  }
  const acked = await Promise.all(sends);
  await waitFor(() => got.length >= N, `all ${N} messages (got ${got.length})`, 30_000);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(got.length, N, 'each once');
  assert.equal(new Set(got.map((m) => m.messageKey)).size, N);
  for (let i = 1; i < got.length; i++) assert.ok(got[i].seq > got[i - 1].seq, 'in seq order');
  assert.deepEqual(new Set(got.map((m) => m.messageKey)), new Set(acked.map((a) => a.messageKey)));
  assert.equal(rx.login?.loginCount, 1, 'no reconnect happened');
  assert.ok(rx.inboxSeq > safeAtStart, `the safe point moved mid-session (${safeAtStart} -> ${rx.inboxSeq})`);
});
