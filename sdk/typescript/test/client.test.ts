/**
 * The SDK against a real `tern`: login, send/ack, pushes, offline catch-up by pull,
 * resume without duplicates, recall, read receipts, profile and friendship
 * notifications, group messages, refused logins and sends; the conversation frames.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import * as flatbuffers from 'flatbuffers';

import * as Fb from '../src/generated/tern/client.js';
import {
  ConversationOp,
  ConversationType,
  ElemType,
  EntryKind,
  KickReason,
  SyncKind,
  TernClient,
  TernError,
  TimelineEntry,
  decodeFrame,
  encodeConversationGet,
  encodeConversationSync,
  encodePing,
} from '../src/index.js';
import { startTern, TernServer, waitFor } from './server.js';

let tern: TernServer;
const clients: TernClient[] = [];

function track(c: TernClient): TernClient {
  clients.push(c);
  return c;
}

function collect(c: TernClient): TimelineEntry[] {
  const got: TimelineEntry[] = [];
  c.on('message', (m) => got.push(m));
  return got;
}

const text = (m: TimelineEntry) => m.elems[0]?.text;

before(async () => {
  tern = await startTern();
  await tern.importUsers(['alice', 'bob', 'carol', 'dave', 'erin', 'frank']);
});

after(async () => {
  for (const c of clients) c.close();
  await tern?.stop();
});

describe('frames', () => {
  it('encodes the header as PROTOCOL.md §2 says and rejects a bad version', () => {
    const f = encodePing(7, 42n);
    const len = f[0] | (f[1] << 8) | (f[2] << 16);
    assert.equal(len, f.length - 4);
    assert.equal(f[3], 1);
    const bad = f.slice();
    bad[3] = 2;
    assert.throws(() => decodeFrame(bad), /version 2/);
    assert.throws(() => decodeFrame(f.slice(0, 3)), /shorter than its header/);
  });
});

describe('conversation frames', () => {
  it('encodes ConversationGet / ConversationSync and decodes a ConversationList', () => {
    const get = encodeConversationGet(9, 20, 50);
    const sync = encodeConversationSync(10, 77n, 100);
    for (const f of [get, sync]) assert.equal(f[0] | (f[1] << 8) | (f[2] << 16), f.length - 4);
    // A server's answer, built with the generated code as the Rust side builds it.
    const b = new flatbuffers.Builder(256);
    const target = b.createString('bob');
    const sender = b.createString('bob');
    const preview = b.createString('hi');
    const extra = b.createString('x');
    Fb.ConversationInfo.startConversationInfo(b);
    Fb.ConversationInfo.addConversationType(b, ConversationType.Single);
    Fb.ConversationInfo.addTargetId(b, target);
    Fb.ConversationInfo.addOp(b, ConversationOp.Put);
    Fb.ConversationInfo.addIsMute(b, true);
    Fb.ConversationInfo.addExtra(b, extra);
    Fb.ConversationInfo.addReadSeq(b, 3n);
    Fb.ConversationInfo.addUnread(b, 2n);
    Fb.ConversationInfo.addSyncSeq(b, 12n);
    Fb.ConversationInfo.addLastMessageKey(b, 99n);
    Fb.ConversationInfo.addLastSeq(b, 5n);
    Fb.ConversationInfo.addLastSender(b, sender);
    Fb.ConversationInfo.addLastPreview(b, preview);
    const one = Fb.ConversationInfo.endConversationInfo(b);
    const none = Fb.ConversationInfo.createConversationInfo(b, ConversationType.Group, b.createString('team'), ConversationOp.Delete, false, false, 0, 0n, 0n, 0n, 13n, 0n, 0n, 0n, 0n, 0, 0, false);
    const list = Fb.ConversationList.createConversationList(b, Fb.ConversationList.createConversationsVector(b, [one, none]), 13n, true, 2);
    Fb.Frame.startFrame(b);
    Fb.Frame.addRequestId(b, 9);
    Fb.Frame.addBodyType(b, Fb.Body.ConversationList);
    Fb.Frame.addBody(b, list);
    b.finish(Fb.Frame.endFrame(b));
    const payload = b.asUint8Array();
    const bytes = new Uint8Array([payload.length & 0xff, (payload.length >> 8) & 0xff, payload.length >> 16, 1, ...payload]);
    const f = decodeFrame(bytes);
    assert.equal(f.type, 'conversationList');
    if (f.type !== 'conversationList') return;
    assert.equal(f.requestId, 9);
    assert.equal(f.maxSeq, 13n);
    assert.equal(f.total, 2);
    assert.equal(f.completed, true);
    const [c, d] = f.conversations;
    assert.equal(c.targetId, 'bob');
    assert.equal(c.isMute, true);
    assert.equal(c.extra, 'x');
    assert.equal(c.unread, 2n);
    assert.deepEqual(c.lastMessage, { messageKey: 99n, seq: 5n, timeMs: 0n, senderId: 'bob', preview: 'hi', recalled: false });
    assert.equal(d.op, ConversationOp.Delete);
    assert.equal(d.conversationType, ConversationType.Group);
    assert.equal(d.lastMessage, null, 'key 0: no last message');
  });
});

describe('TernClient', () => {
  it('logs in, sends with an acked promise, and the peer gets the push', async () => {
    const alice = track(tern.client('alice'));
    const bob = track(tern.client('bob'));
    const states: string[] = [];
    alice.on('state', (s) => states.push(s));
    const info = await alice.connect();
    assert.ok(info.sessionId > 0n);
    assert.equal(info.loginCount, 1);
    assert.deepEqual(states, ['connecting', 'syncing', 'online']);
    await bob.connect();
    const got = collect(bob);
    const sent = await alice.sendText('bob', 'hello bob');
    assert.ok(sent.messageKey > 0n && sent.seq > 0n);
    await waitFor(() => got.length === 1, 'the push to bob');
    assert.equal(text(got[0]), 'hello bob');
    assert.equal(got[0].fromId, 'alice');
    assert.equal(got[0].messageKey, sent.messageKey);
    assert.equal(got[0].clientMsgId, sent.clientMsgId);
    assert.equal(got[0].entry, EntryKind.Message);
    alice.close();
    bob.close();
  });

  it('catches up by pull after being offline, and resumes from its sync point without duplicates', async () => {
    const alice = track(tern.client('alice', { deviceId: 'alice-2' }));
    await alice.connect();
    for (let i = 0; i < 5; i++) await alice.sendText('carol', `offline ${i}`);
    const carol = track(tern.client('carol'));
    const got = collect(carol);
    await carol.connect();
    // connect() resolves after the login's sync: everything is there already.
    assert.deepEqual(got.map(text), [0, 1, 2, 3, 4].map((i) => `offline ${i}`));
    const point = carol.inboxSeq;
    carol.close();
    await alice.sendText('carol', 'while away');
    const again = track(tern.client('carol', { syncPoint: point }));
    const got2 = collect(again);
    await again.connect();
    assert.deepEqual(got2.map(text), ['while away']);
    // A reconnect pulls again from the sync point: nothing is reported twice.
    again.reconnect();
    await waitFor(() => again.login?.loginCount === 2 && again.state === 'online', 'the second login');
    await alice.sendText('carol', 'after reconnect');
    await waitFor(() => got2.length === 2, 'the message after the reconnect');
    assert.deepEqual(got2.map(text), ['while away', 'after reconnect']);
    alice.close();
    again.close();
  });

  it('a new client of a device resumes where the server says that device acknowledged', async () => {
    const alice = track(tern.client('alice', { deviceId: 'alice-3' }));
    await alice.connect();
    const dave = track(tern.client('dave'));
    const got = collect(dave);
    await dave.connect();
    await alice.sendText('dave', 'one');
    await waitFor(() => got.length === 1, 'one');
    // The client acknowledges its safe point (a completed pull), never a pushed seq
    // alone: a sync (here the one after a reconnect) moves it past 'one'.
    dave.reconnect();
    await waitFor(() => dave.login?.loginCount === 2 && dave.state === 'online', 'the second login');
    assert.equal(dave.inboxSeq, got[0].seq);
    await new Promise((r) => setTimeout(r, 200));
    dave.close();
    await alice.sendText('dave', 'two');
    const dave2 = track(tern.client('dave'));
    const got2 = collect(dave2);
    const info = await dave2.connect();
    assert.equal(info.ackedSeqs.find((k) => k.kind === SyncKind.Message)?.seq, got[0].seq);
    assert.deepEqual(got2.map(text), ['two']);
    alice.close();
    dave2.close();
  });

  it('own sends are reported by send() only, also when pulled again after a reconnect', async () => {
    const alice = track(tern.client('alice', { deviceId: 'alice-4' }));
    const got = collect(alice);
    await alice.connect();
    const before = got.length; // history from earlier tests (a new device pulls it all)
    await alice.sendText('erin', 'mine');
    alice.reconnect();
    await waitFor(() => alice.login?.loginCount === 2 && alice.state === 'online', 'the second login');
    assert.equal(got.length, before, 'own send not reported as a message');
    alice.close();
  });

  it('recall reaches both sides, and a recalled message pulls as recalled', async () => {
    const alice = track(tern.client('alice', { deviceId: 'alice-5' }));
    const erin = track(tern.client('erin'));
    await alice.connect();
    const got = collect(erin);
    await erin.connect();
    const recallsAlice: bigint[] = [];
    const recallsErin: bigint[] = [];
    alice.on('recall', (r) => recallsAlice.push(r.messageKey));
    erin.on('recall', (r) => recallsErin.push(r.messageKey));
    const sent = await alice.sendText('erin', 'oops');
    await waitFor(() => got.some((m) => m.messageKey === sent.messageKey), 'the message');
    await alice.recall(sent.messageKey, 'erin');
    await waitFor(() => recallsErin.includes(sent.messageKey), 'erin sees the recall');
    await waitFor(() => recallsAlice.includes(sent.messageKey), 'alice sees the recall');
    await assert.rejects(alice.recall(sent.messageKey, 'erin'), (e: TernError) => e.code === 50005);
    // A new device of erin pulls the message as recalled, then the recall event.
    const erin2 = track(tern.client('erin', { deviceId: 'erin-2' }));
    const got2 = collect(erin2);
    const recalls2: bigint[] = [];
    erin2.on('recall', (r) => recalls2.push(r.messageKey));
    await erin2.connect();
    const m = got2.find((x) => x.messageKey === sent.messageKey)!;
    assert.ok(m.recalled);
    assert.equal(m.elems.length, 0);
    assert.deepEqual(recalls2, [sent.messageKey]);
    alice.close();
    erin.close();
    erin2.close();
  });

  it('read receipts reach the peer', async () => {
    const alice = track(tern.client('alice', { deviceId: 'alice-6' }));
    const frank = track(tern.client('frank'));
    await alice.connect();
    const got = collect(frank);
    await frank.connect();
    const receipts: { readerId: string; readSeq: bigint }[] = [];
    alice.on('readReceipt', (r) => receipts.push(r));
    await alice.sendText('frank', 'read me');
    await waitFor(() => got.length === 1, 'the message');
    frank.markRead('alice', got[0].seq);
    await waitFor(() => receipts.length === 1, 'the receipt');
    assert.equal(receipts[0].readerId, 'frank');
    assert.equal(receipts[0].readSeq, got[0].seq);
    // A receipt above the reader's newest message is refused: an error event.
    const errors: TernError[] = [];
    frank.on('error', (e) => errors.push(e as TernError));
    frank.markRead('alice', got[0].seq + 1000n);
    await waitFor(() => errors.length === 1, 'the refusal');
    assert.equal(errors[0].code, 50000);
    alice.close();
    frank.close();
  });

  it('reports profile and friendship changes', async () => {
    const bob = track(tern.client('bob', { deviceId: 'bob-7' }));
    await bob.connect();
    const profile: bigint[] = [];
    const friends: SyncKind[] = [];
    bob.on('profileChanged', (n) => profile.push(n.seq));
    bob.on('friendshipChanged', (n) => friends.push(n.kind));
    await tern.api('user/data/modifyUserInfo', { userId: 'bob', nickName: 'Bobby' });
    await waitFor(() => profile.length >= 1, 'the profile notification');
    assert.ok(bob.latestSeq(SyncKind.Profile) >= profile[0]);
    await tern.api('friendship/add', { fromId: 'bob', toItem: { toId: 'carol' } });
    await waitFor(() => friends.includes(SyncKind.Friendship), 'the friendship notification');
    bob.close();
  });

  it('group messages: push to members, pull of the group timeline after being offline, group recall', async () => {
    await tern.api('group/createGroup', {
      groupId: 'g1',
      groupType: 3,
      ownerId: 'alice',
      memberList: [{ memberId: 'bob' }, { memberId: 'carol' }],
    });
    const alice = track(tern.client('alice', { deviceId: 'alice-8', groups: { g1: 0n } }));
    const bob = track(tern.client('bob', { deviceId: 'bob-8', groups: { g1: 0n } }));
    await alice.connect();
    const got = collect(bob);
    await bob.connect();
    const sent = await alice.sendGroupText('g1', 'hi group');
    await waitFor(() => got.some((m) => m.messageKey === sent.messageKey), 'the group push');
    const m = got.find((x) => x.messageKey === sent.messageKey)!;
    assert.equal(m.conversationType, ConversationType.Group);
    assert.equal(m.toId, 'g1');
    assert.equal(m.seq, sent.seq);
    // carol was offline: she pulls the group's timeline at login.
    await alice.sendGroupText('g1', 'second');
    const carol = track(tern.client('carol', { deviceId: 'carol-8', groups: { g1: 0n } }));
    const gotCarol = collect(carol);
    await carol.connect();
    assert.deepEqual(
      gotCarol.filter((x) => x.conversationType === ConversationType.Group).map(text),
      ['hi group', 'second'],
    );
    assert.ok(carol.groupSeqs.g1 >= sent.seq);
    const recalls: RecallSeen[] = [];
    carol.on('recall', (r) => recalls.push({ key: r.messageKey, type: r.conversationType }));
    await alice.recall(sent.messageKey, 'g1', ConversationType.Group);
    await waitFor(() => recalls.length === 1, 'the group recall');
    assert.deepEqual(recalls[0], { key: sent.messageKey, type: ConversationType.Group });
    // Not a member: refused with the server's code.
    const erin = track(tern.client('erin', { deviceId: 'erin-8' }));
    await erin.connect();
    await assert.rejects(erin.sendGroupText('g1', 'let me in'), (e: TernError) => e.code === 40006);
    for (const c of [alice, bob, carol, erin]) c.close();
  });

  it('a bad signature fails connect() with the server code and does not retry', async () => {
    const mallory = track(tern.client('alice', { userSign: 'not-a-signature', deviceId: 'mallory' }));
    const states: string[] = [];
    mallory.on('state', (s) => states.push(s));
    await assert.rejects(mallory.connect(), (e: TernError) => e.code === 60006);
    assert.equal(mallory.state, 'closed');
    const ghost = track(tern.client('nobody-here'));
    await assert.rejects(ghost.connect(), (e: TernError) => e.code === 20001);
  });

  it('a send refused by the server rejects with its code', async () => {
    const alice = track(tern.client('alice', { deviceId: 'alice-9' }));
    await alice.connect();
    await assert.rejects(
      alice.send({ toId: 'bob', elems: [{ type: ElemType.Image }] }),
      (e: TernError) => e.code === 50000,
    );
    alice.close();
  });

  it('a replaced session is told and does not come back by itself', async () => {
    const a1 = track(tern.client('alice', { deviceId: 'same-device' }));
    await a1.connect();
    const kicks: KickReason[] = [];
    a1.on('kicked', (k) => kicks.push(k.reason));
    const a2 = track(tern.client('alice', { deviceId: 'same-device' }));
    await a2.connect();
    await waitFor(() => a1.state === 'closed', 'the first session to close');
    assert.deepEqual(kicks, [KickReason.ReplacedByNewLogin]);
    a2.close();
  });
});

interface RecallSeen {
  key: bigint;
  type: ConversationType;
}
