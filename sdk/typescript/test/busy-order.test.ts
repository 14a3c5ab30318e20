/**
 * Send order across busy refusals. The gateway here lets one Send per core through to
 * logic at a time (`[gateway] max_sends_in_flight_per_core = 1`) and answers the others
 * at once with SendAck(80009), which stores nothing; once it refused a Send it refuses
 * the connection's later Sends too until the refused one comes again (PROTOCOL.md,
 * "One sender's order"). The client retries the refused sends oldest first, so a
 * pipelined burst A, refused in part, then a burst B made while the client holds after
 * the first refusal, must be stored exactly in call order: A, then B. (Before the server
 * held a connection's later sends, bursts came out as `0 10 11 … 17 1 18 …`: sends
 * already on the wire behind a refused one were accepted before its retry.)
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import WebSocket from 'ws';

import { decodeFrame, SentMessage, TernClient, TimelineEntry, WebSocketConstructor } from '../src/index.js';
import { startTern, TernServer, waitFor } from './server.js';

const BURST = 100;

let tern: TernServer;
const clients: TernClient[] = [];

/** What a tapped client was told: busy refusals of its sends. */
interface Tap {
  /** client_msg_ids answered SendAck(80009), in arrival order (repeats if refused again). */
  refused: string[];
  /** Error frames with a busy code (they carry no client_msg_id). */
  busyErrors: number;
  /** Called after the client handled each refusal. */
  onRefused: () => void;
}

/** A `ws` WebSocket that shows the tap every frame, after the client handled it. */
function tapped(tap: Tap): WebSocketConstructor {
  return class extends WebSocket {
    constructor(url: string) {
      super(url);
      // This listener runs before the client's `onmessage` (set later): look once the
      // client is done with the frame.
      this.on('message', (data) =>
        queueMicrotask(() => {
          const f = decodeFrame(data instanceof ArrayBuffer ? new Uint8Array(data) : (data as Buffer));
          if (f.type === 'sendAck' && f.code === 80009) {
            tap.refused.push(f.clientMsgId);
            tap.onRefused();
          } else if (f.type === 'error' && [80009, 50006, 80005].includes(f.code)) tap.busyErrors++;
        }),
      );
    }
  } as unknown as WebSocketConstructor;
}

before(async () => {
  // Only the gateway's Send window refuses: the per-connection frame and send rates are
  // raised so that bursts are not rate-limited (80005, 50006) instead.
  tern = await startTern({
    TERN_GATEWAY__MAX_SENDS_IN_FLIGHT_PER_CORE: '1',
    TERN_GATEWAY__INBOUND_FRAMES_PER_SEC: '10000',
    TERN_MESSAGES__SENDS_PER_SEC: '10000',
  });
  await tern.importUsers(['burst-tx', 'burst-rx']);
});

after(async () => {
  for (const c of clients) c.close();
  await tern?.stop();
});

it('bursts refused in part by a busy gateway are stored and delivered in call order', async () => {
  const tap: Tap = { refused: [], busyErrors: 0, onRefused: () => {} };
  const rx = tern.client('burst-rx');
  const tx = tern.client('burst-tx', { WebSocket: tapped(tap) });
  clients.push(rx, tx);
  const got: TimelineEntry[] = [];
  rx.on('message', (m) => got.push(m));
  await rx.connect();
  await tx.connect();
  // The window bounds a core only once logic has answered a Send on its link: one
  // awaited send first, so the bursts meet the bound.
  await tx.sendText('burst-rx', 'warm-up');

  const a: Promise<SentMessage>[] = [];
  const b: Promise<SentMessage>[] = [];
  // Burst B is made as soon as the client has handled the first refusal of burst A.
  tap.onRefused = () => {
    tap.onRefused = () => {};
    for (let k = 0; k < BURST; k++) b.push(tx.sendText('burst-rx', `b${k}`));
  };
  for (let k = 0; k < BURST; k++) a.push(tx.sendText('burst-rx', `a${k}`));
  const ackedA = await Promise.all(a);
  await waitFor(() => b.length === BURST, 'burst B (made at the first refusal)');
  const ackedB = await Promise.all(b);

  const refusedIds = new Set(tap.refused);
  assert.ok(refusedIds.size > 0, 'the gateway refused part of burst A (else this test proves nothing)');
  assert.equal(tap.busyErrors, 0, 'refusals came as SendAcks, which name the send');
  const all = [...ackedA, ...ackedB];
  assert.equal(new Set(all.map((s) => s.messageKey)).size, 2 * BURST, 'each send stored once');

  const name = (s: SentMessage) => s.elems[0].text!;
  const atOnce = ackedA.filter((s) => !refusedIds.has(s.clientMsgId)).length;
  const expected = all.map(name);
  const stored = [...all].sort((x, y) => (x.seq < y.seq ? -1 : 1)).map(name);
  assert.deepEqual(stored, expected, 'stored in call order: A, then B');

  await waitFor(() => got.length >= 2 * BURST + 1, `all messages at the peer (got ${got.length})`, 30_000);
  assert.deepEqual(got.map((m) => m.elems[0]?.text), ['warm-up', ...expected], 'the peer got them in the same order');
  console.log(
    `busy-order: ${2 * BURST} sends, ${refusedIds.size} refused (${tap.refused.length} refusals) and retried, ` +
      `${atOnce} of burst A never refused; stored in call order`,
  );
});
