/**
 * Conversations through the SDK against a real `tern`: exact unread counts that go up with
 * messages and to 0 after a read, the reader's second device told (`conversations`
 * event) and syncing the new read mark, a muted conversation's pushes `silent`, a delete
 * seen as a tombstone by sync.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  ConversationInfo,
  ConversationOp,
  ConversationType,
  SyncNotifyEvent,
  TernClient,
  TimelineEntry,
} from '../src/index.js';
import { startTern, TernServer, waitFor } from './server.js';

let tern: TernServer;
const clients: TernClient[] = [];

function track(c: TernClient): TernClient {
  clients.push(c);
  return c;
}

/** Polls `get` until `pred` holds of its value; returns that value. */
async function eventually<T>(get: () => Promise<T>, pred: (v: T) => boolean, what: string, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (pred(v)) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x))}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function conversationWith(c: TernClient, target: string): Promise<ConversationInfo | undefined> {
  const page = await c.getConversations();
  return page.conversations.find((x) => x.targetId === target);
}

before(async () => {
  tern = await startTern();
  await tern.importUsers(['ann', 'ben', 'cat', 'dan', 'eve']);
});

after(async () => {
  for (const c of clients) c.close();
  await tern?.stop();
});

describe('conversations', () => {
  it('unread counts go up with messages and to 0 after a read', async () => {
    const ann = track(tern.client('ann'));
    const ben = track(tern.client('ben'));
    await ann.connect();
    await ben.connect();
    const empty = await ben.getConversations();
    assert.equal(empty.total, 0);
    assert.equal(empty.completed, true);

    await ann.sendText('ben', 'one');
    let c = await eventually(() => conversationWith(ben, 'ann'), (x) => x?.unread === 1n, 'unread 1');
    assert.equal(c!.conversationType, ConversationType.Single);
    assert.equal(c!.op, ConversationOp.Put);
    await ann.sendText('ben', 'two');
    const last = await ann.sendText('ben', 'three');
    c = await eventually(() => conversationWith(ben, 'ann'), (x) => x?.unread === 3n, 'unread 3');
    assert.equal(c!.lastMessage?.preview, 'three');
    assert.equal(c!.lastMessage?.senderId, 'ann');
    assert.equal(c!.lastMessage?.messageKey, last.messageKey);
    // Own messages are never unread: ann's side of the conversation reads 0.
    const annSide = await conversationWith(ann, 'ben');
    assert.equal(annSide?.unread, 0n);
    assert.equal(annSide?.lastMessage?.preview, 'three');

    // Reading up to the newest message clears it, and the read mark moves there.
    ben.markConversationRead(c!);
    c = await eventually(() => conversationWith(ben, 'ann'), (x) => x?.unread === 0n, 'unread 0 after the read');
    assert.equal(c!.readSeq, c!.lastMessage!.seq);
    // A new message counts again from the read mark.
    await ann.sendText('ben', 'four');
    c = await eventually(() => conversationWith(ben, 'ann'), (x) => x?.unread === 1n, 'unread 1 after a new message');
    // Nothing to read: no receipt.
    ben.markConversationRead({ ...c!, lastMessage: null });
    // Paging: limit 1 answers one conversation at a time.
    await tern.api('user/importUser', { userData: [{ userId: 'zed', nickName: 'zed' }] });
    const zed = track(tern.client('zed'));
    await zed.connect();
    await zed.sendText('ben', 'from zed');
    await eventually(() => ben.getConversations(), (p) => p.total === 2, 'two conversations');
    const p1 = await ben.getConversations({ limit: 1 });
    assert.equal(p1.conversations.length, 1);
    assert.equal(p1.completed, false);
    assert.equal(p1.conversations[0].targetId, 'zed', 'newest activity first');
    const p2 = await ben.getConversations({ offset: p1.nextOffset, limit: 1 });
    assert.equal(p2.conversations[0].targetId, 'ann');
    assert.equal(p2.completed, true);
    await assert.rejects(ben.getConversations({ limit: 0 }), /limit must be 1..=1000/);
  });

  it("a second device gets the conversation notify and syncs the read mark", async () => {
    const cat = track(tern.client('cat'));
    const dan1 = track(tern.client('dan', { deviceId: 'dan-phone' }));
    const dan2 = track(tern.client('dan', { deviceId: 'dan-laptop' }));
    await cat.connect();
    await dan1.connect();
    await dan2.connect();
    const notified1: SyncNotifyEvent[] = [];
    const notified2: SyncNotifyEvent[] = [];
    dan1.on('conversations', (n) => notified1.push(n));
    dan2.on('conversations', (n) => notified2.push(n));
    const start = await dan2.syncConversations(0n);
    assert.deepEqual(start.changes, []);

    // A new conversation is logged (a change of the records) at the next read of the
    // list, not per message (PROTOCOL.md "Conversations"); then every device hears of it.
    await cat.sendText('dan', 'hi dan');
    await cat.sendText('dan', 'are you there?');
    const appeared = await dan2.syncConversations(start.maxSeq);
    assert.ok(appeared.maxSeq > start.maxSeq);
    const rec = appeared.changes.find((x) => x.targetId === 'cat');
    assert.ok(rec, 'the new conversation is in the sync');
    assert.equal(rec!.op, ConversationOp.Put);
    assert.equal(rec!.readSeq, 0n);
    await waitFor(() => notified1.some((n) => n.seq === appeared.maxSeq), 'the phone told of the new conversation');

    // dan reads on the phone: the laptop is told, the phone (the reader) is not.
    const c = await eventually(() => conversationWith(dan1, 'cat'), (x) => x?.unread === 2n, 'unread 2 on the phone');
    const before1 = notified1.length;
    const before2 = notified2.length;
    dan1.markConversationRead(c!);
    await waitFor(() => notified2.length > before2, 'the laptop told of the read');
    assert.ok(notified2[notified2.length - 1].seq > appeared.maxSeq);
    const read = await dan2.syncConversations(appeared.maxSeq);
    const moved = read.changes.filter((x) => x.targetId === 'cat');
    assert.equal(moved.length, 1);
    assert.equal(moved[0].readSeq, c!.lastMessage!.seq);
    assert.equal(moved[0].syncSeq, read.maxSeq);
    const onLaptop = await conversationWith(dan2, 'cat');
    assert.equal(onLaptop?.unread, 0n);
    assert.equal(notified1.length, before1, 'the reading device gets no notify of its own read');
    // Synced up: nothing more.
    assert.deepEqual((await dan2.syncConversations(read.maxSeq)).changes, []);
  });

  it("a muted conversation's pushes are silent; a delete syncs as a tombstone", async () => {
    const ann = track(tern.client('ann', { deviceId: 'ann-mute-test' }));
    const eve = track(tern.client('eve'));
    await ann.connect();
    await eve.connect();
    const got: TimelineEntry[] = [];
    eve.on('message', (m) => got.push(m));
    const notified: SyncNotifyEvent[] = [];
    eve.on('conversations', (n) => notified.push(n));

    await ann.sendText('eve', 'loud');
    await waitFor(() => got.length === 1, 'the first push');
    assert.equal(got[0].silent, false);
    // The list read loads eve's records into the server's memory (PROTOCOL.md "Muted").
    const base = await eve.getConversations();
    assert.equal(base.conversations[0].isMute, false);

    await tern.api('conversation/update', { fromId: 'eve', conversationId: '1_eve_ann', isMute: true });
    await waitFor(() => notified.some((n) => n.seq > base.maxSeq), 'the notify of the mute');
    const muted = await eve.syncConversations(base.maxSeq);
    assert.equal(muted.changes.length, 1);
    assert.equal(muted.changes[0].isMute, true);
    assert.equal(muted.changes[0].op, ConversationOp.Put);

    await ann.sendText('eve', 'quiet please');
    await waitFor(() => got.length === 2, 'the push from the muted conversation');
    assert.equal(got[1].elems[0].text, 'quiet please');
    assert.equal(got[1].silent, true, 'a push of a muted conversation is silent');

    await tern.api('conversation/update', { fromId: 'eve', conversationId: '1_eve_ann', isMute: false });
    await eventually(() => eve.syncConversations(muted.maxSeq), (ch) => ch.changes.some((x) => !x.isMute), 'the unmute');
    await ann.sendText('eve', 'loud again');
    await waitFor(() => got.length === 3, 'the push after the unmute');
    assert.equal(got[2].silent, false);

    const beforeDelete = (await eve.syncConversations(0n)).maxSeq;
    await tern.api('conversation/delete', { fromId: 'eve', conversationId: '1_eve_ann' });
    const gone = await eventually(
      () => eve.syncConversations(beforeDelete),
      (ch) => ch.changes.length > 0,
      'the tombstone',
    );
    assert.equal(gone.changes[0].targetId, 'ann');
    assert.equal(gone.changes[0].op, ConversationOp.Delete);
    assert.equal((await eve.getConversations()).total, 0);
  });
});
