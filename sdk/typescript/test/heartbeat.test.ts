/**
 * Heartbeats against a real `tern` with a short heartbeat timeout: a client that pings
 * stays logged in; one that does not is kicked (HeartbeatTimeout) and logs in again by
 * itself, without reporting anything twice.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import { KickReason, TernClient, TimelineEntry } from '../src/index.js';
import { startTern, TernServer, waitFor } from './server.js';

let tern: TernServer;
const clients: TernClient[] = [];

before(async () => {
  tern = await startTern({ TERN_GATEWAY__HEARTBEAT_INTERVAL_MS: '400', TERN_GATEWAY__HEARTBEAT_TIMEOUT_MS: '1200' });
  await tern.importUsers(['hb1', 'hb2', 'hb3']);
});

after(async () => {
  for (const c of clients) c.close();
  await tern?.stop();
});

it('a client that pings at the interval the server asks for stays logged in', async () => {
  const c = tern.client('hb1');
  clients.push(c);
  const info = await c.connect();
  assert.equal(info.heartbeatIntervalMs, 400);
  assert.equal(info.heartbeatTimeoutMs, 1200);
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(c.state, 'online');
  assert.equal(c.login?.loginCount, 1, 'never dropped');
});

it('a client that does not ping is kicked and comes back by itself', async () => {
  // Pings far too rarely for the server's 1.2 s timeout.
  const c = tern.client('hb2', { heartbeatIntervalMs: 60_000 });
  clients.push(c);
  const got: TimelineEntry[] = [];
  c.on('message', (m) => got.push(m));
  const kicks: KickReason[] = [];
  c.on('kicked', (k) => kicks.push(k.reason));
  await c.connect();
  const sender = tern.client('hb3');
  clients.push(sender);
  await sender.connect();
  await sender.sendText('hb2', 'before the kick');
  await waitFor(() => kicks.includes(KickReason.HeartbeatTimeout), 'the heartbeat kick', 5_000);
  await waitFor(() => c.login?.loginCount === 2 && c.state === 'online', 'the new login', 5_000);
  await sender.sendText('hb2', 'after the kick');
  await waitFor(() => got.length === 2, 'both messages');
  assert.deepEqual(got.map((m) => m.elems[0].text), ['before the kick', 'after the kick']);
});
