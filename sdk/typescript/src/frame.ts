/**
 * The wire: Tern frames (schema/PROTOCOL.md §2) encoded from and decoded into plain
 * typed objects. A frame is a 4-byte header (24-bit little-endian payload length, then
 * the version byte 1) followed by one FlatBuffers `tern.client.Frame`; over WebSocket one
 * binary message carries exactly one frame.
 *
 * Only this module touches the generated FlatBuffers classes (src/generated, made by
 * `scripts/flatc`), so the client never holds views into a reused receive buffer: every
 * decoded frame is copied out into plain objects.
 */
import * as flatbuffers from 'flatbuffers';

import {
  Body,
  ClientType,
  ConversationGet as FbConversationGet,
  ConversationInfo as FbConversationInfo,
  ConversationList as FbConversationList,
  ConversationOp,
  ConversationSync as FbConversationSync,
  ConversationType,
  Elem as FbElem,
  ElemType,
  EntryKind,
  Error as FbError,
  Frame,
  Kick as FbKick,
  KickReason,
  Login as FbLogin,
  LoginAck as FbLoginAck,
  Logout as FbLogout,
  Message as FbMessage,
  Ping as FbPing,
  Pong as FbPong,
  Pull as FbPull,
  PullResult as FbPullResult,
  Push as FbPush,
  PushAck as FbPushAck,
  ReadReceipt as FbReadReceipt,
  ReadReceiptNotify as FbReadReceiptNotify,
  Recall as FbRecall,
  RecallNotify as FbRecallNotify,
  Send as FbSend,
  SendAck as FbSendAck,
  SyncKind,
  SyncNotify as FbSyncNotify,
} from './generated/tern/client.js';

export { ClientType, ConversationOp, ConversationType, ElemType, EntryKind, KickReason, SyncKind };

/** The only framing version (PROTOCOL.md §2). */
export const PROTOCOL_VERSION = 1;
/** Header bytes before every payload. */
export const HEADER_BYTES = 4;
/** Largest payload a 24-bit length can say. */
export const MAX_PAYLOAD_BYTES = 0xffffff;

/** One element of a message body (PROTOCOL.md "Messages"; client.fbs `Elem`). */
export interface Elem {
  type: ElemType;
  text?: string;
  data?: Uint8Array;
  url?: string;
  extra?: string;
}

/** A timeline entry: a message, or an event about one (`entry = Recall`). */
export interface TimelineEntry {
  messageKey: bigint;
  conversationType: ConversationType;
  fromId: string;
  toId: string;
  /** The owner's seq: the user's inbox seq, or the group seq for group entries. */
  seq: bigint;
  serverTimeMs: bigint;
  clientTimeMs: bigint;
  clientMsgId: string;
  elems: Elem[];
  recalled: boolean;
  fromDevice: string;
  entry: EntryKind;
  random: bigint;
  badgeMode: number;
  lifeTimeSecs: number;
  /**
   * From a Push with `silent` set: every message of that push is from a conversation the
   * user muted (show it, do not alert). Always false for pulled entries.
   */
  silent: boolean;
}

/** The newest message of a conversation (ConversationGet answers only). */
export interface LastMessage {
  messageKey: bigint;
  /** Its seq in the timeline the user reads: the inbox (1:1) or the group's. */
  seq: bigint;
  timeMs: bigint;
  senderId: string;
  /** The start of its text, or [image], [file], ...; empty once recalled. */
  preview: string;
  recalled: boolean;
}

/**
 * One conversation of the user's list (ConversationGet), or one change of it
 * (ConversationSync): client.fbs `ConversationInfo`.
 */
export interface ConversationInfo {
  conversationType: ConversationType;
  /** The peer (Single) or the group (Group). */
  targetId: string;
  /** Put: the record's state; Delete: removed on the server; ClientDelete: remove it on this device only. */
  op: ConversationOp;
  isTop: boolean;
  isMute: boolean;
  extra: string;
  /** Read up to this seq (the user's inbox seq for Single, the group seq for Group). */
  readSeq: bigint;
  /** History up to this seq was cleared for the user (0: never). */
  clearedSeq: bigint;
  /** Others' messages above the read mark, exact (ConversationGet only; 0 in sync answers). */
  unread: bigint;
  /** The record's position in the user's Conversation log. */
  syncSeq: bigint;
  updatedMs: bigint;
  /** The newest message (ConversationGet only); null if there is none. */
  lastMessage: LastMessage | null;
}

export interface KindSeqPair {
  kind: SyncKind;
  seq: bigint;
}

/** Frames a server sends, decoded. `requestId` is 0 for unsolicited frames. */
export type ServerFrame =
  | {
      type: 'loginAck';
      requestId: number;
      sessionId: bigint;
      serverTimeMs: bigint;
      heartbeatIntervalMs: number;
      heartbeatTimeoutMs: number;
      maxSeqs: KindSeqPair[];
      ackedSeqs: KindSeqPair[];
      maxFrameBytes: number;
    }
  | { type: 'pong'; requestId: number; clientTimeMs: bigint; serverTimeMs: bigint }
  | {
      type: 'sendAck';
      requestId: number;
      clientMsgId: string;
      code: number;
      message: string;
      messageKey: bigint;
      seq: bigint;
      serverTimeMs: bigint;
    }
  | { type: 'push'; requestId: number; messages: TimelineEntry[]; silent: boolean }
  | {
      type: 'conversationList';
      requestId: number;
      conversations: ConversationInfo[];
      maxSeq: bigint;
      completed: boolean;
      total: number;
    }
  | {
      type: 'pullResult';
      requestId: number;
      kind: SyncKind;
      messages: TimelineEntry[];
      maxSeq: bigint;
      completed: boolean;
    }
  | {
      type: 'readReceiptNotify';
      requestId: number;
      conversationType: ConversationType;
      readerId: string;
      peerId: string;
      readSeq: bigint;
    }
  | { type: 'syncNotify'; requestId: number; kind: SyncKind; seq: bigint }
  | { type: 'recallNotify'; requestId: number; messageKey: bigint; fromId: string; toId: string; seq: bigint }
  | { type: 'kick'; requestId: number; reason: KickReason; message: string }
  | { type: 'error'; requestId: number; code: number; message: string }
  /** A body this SDK does not know (a newer server): ignored, as PROTOCOL.md §9 asks. */
  | { type: 'unknown'; requestId: number; bodyType: number };

/** A frame that is not a valid Tern frame. */
export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

function finish(b: flatbuffers.Builder, requestId: number, bodyType: Body, body: flatbuffers.Offset): Uint8Array {
  Frame.startFrame(b);
  Frame.addRequestId(b, requestId >>> 0);
  Frame.addBodyType(b, bodyType);
  Frame.addBody(b, body);
  b.finish(Frame.endFrame(b));
  const payload = b.asUint8Array();
  const out = new Uint8Array(HEADER_BYTES + payload.length);
  const len = payload.length;
  out[0] = len & 0xff;
  out[1] = (len >>> 8) & 0xff;
  out[2] = (len >>> 16) & 0xff;
  out[3] = PROTOCOL_VERSION;
  out.set(payload, HEADER_BYTES);
  return out;
}

function str(b: flatbuffers.Builder, s: string | undefined): flatbuffers.Offset {
  return s === undefined ? 0 : b.createString(s);
}

export interface LoginFields {
  appId: number;
  userId: string;
  userSign: string;
  clientType: ClientType;
  deviceId: string;
  clientVersion: string;
}

export function encodeLogin(requestId: number, l: LoginFields): Uint8Array {
  const b = new flatbuffers.Builder(256);
  const user = b.createString(l.userId);
  const sign = b.createString(l.userSign);
  const device = b.createString(l.deviceId);
  const version = b.createString(l.clientVersion);
  const body = FbLogin.createLogin(b, l.appId >>> 0, user, sign, l.clientType, device, version);
  return finish(b, requestId, Body.Login, body);
}

export function encodeLogout(requestId: number): Uint8Array {
  const b = new flatbuffers.Builder(32);
  FbLogout.startLogout(b);
  return finish(b, requestId, Body.Logout, FbLogout.endLogout(b));
}

export function encodePing(requestId: number, clientTimeMs: bigint): Uint8Array {
  const b = new flatbuffers.Builder(32);
  return finish(b, requestId, Body.Ping, FbPing.createPing(b, clientTimeMs));
}

export interface SendFields {
  clientMsgId: string;
  conversationType: ConversationType;
  toId: string;
  elems: Elem[];
  clientTimeMs: bigint;
}

export function encodeSend(requestId: number, s: SendFields): Uint8Array {
  const b = new flatbuffers.Builder(256);
  const elems = s.elems.map((e) => {
    const text = str(b, e.text);
    const data = e.data === undefined ? 0 : FbElem.createDataVector(b, e.data);
    const url = str(b, e.url);
    const extra = str(b, e.extra);
    return FbElem.createElem(b, e.type, text, data, url, extra);
  });
  const id = b.createString(s.clientMsgId);
  const to = b.createString(s.toId);
  const vec = FbSend.createElemsVector(b, elems);
  const body = FbSend.createSend(b, id, s.conversationType, to, vec, s.clientTimeMs);
  return finish(b, requestId, Body.Send, body);
}

/** `groupId` set: the ack (or pull) is of that group's timeline, by group seq. */
export function encodePushAck(requestId: number, kind: SyncKind, seq: bigint, groupId?: string): Uint8Array {
  const b = new flatbuffers.Builder(64);
  const g = str(b, groupId);
  return finish(b, requestId, Body.PushAck, FbPushAck.createPushAck(b, kind, seq, g));
}

export function encodePull(requestId: number, kind: SyncKind, afterSeq: bigint, limit: number, groupId?: string): Uint8Array {
  const b = new flatbuffers.Builder(64);
  const g = str(b, groupId);
  return finish(b, requestId, Body.Pull, FbPull.createPull(b, kind, afterSeq, limit >>> 0, g));
}

export function encodeReadReceipt(
  requestId: number,
  conversationType: ConversationType,
  peerId: string,
  readSeq: bigint,
): Uint8Array {
  const b = new flatbuffers.Builder(64);
  const p = b.createString(peerId);
  return finish(b, requestId, Body.ReadReceipt, FbReadReceipt.createReadReceipt(b, conversationType, p, readSeq));
}

export function encodeRecall(
  requestId: number,
  messageKey: bigint,
  conversationType: ConversationType,
  peerId: string,
): Uint8Array {
  const b = new flatbuffers.Builder(64);
  const p = b.createString(peerId);
  return finish(b, requestId, Body.Recall, FbRecall.createRecall(b, messageKey, conversationType, p));
}

/** ConversationGet: a page of the list; `limit` 0 means the server's default (100), capped at 1000. */
export function encodeConversationGet(requestId: number, offset: number, limit: number): Uint8Array {
  const b = new flatbuffers.Builder(32);
  return finish(b, requestId, Body.ConversationGet, FbConversationGet.createConversationGet(b, offset >>> 0, limit >>> 0));
}

/** ConversationSync: the changes of the user's conversation records after `afterSeq`. */
export function encodeConversationSync(requestId: number, afterSeq: bigint, limit: number): Uint8Array {
  const b = new flatbuffers.Builder(32);
  return finish(b, requestId, Body.ConversationSync, FbConversationSync.createConversationSync(b, afterSeq, limit >>> 0));
}

function decodeConversation(c: FbConversationInfo): ConversationInfo {
  const key = c.lastMessageKey();
  return {
    conversationType: c.conversationType(),
    targetId: c.targetId() ?? '',
    op: c.op(),
    isTop: c.isTop(),
    isMute: c.isMute(),
    extra: c.extra() ?? '',
    readSeq: c.readSeq(),
    clearedSeq: c.clearedSeq(),
    unread: c.unread(),
    syncSeq: c.syncSeq(),
    updatedMs: c.updatedMs(),
    lastMessage:
      key === 0n
        ? null
        : {
            messageKey: key,
            seq: c.lastSeq(),
            timeMs: c.lastTimeMs(),
            senderId: c.lastSender() ?? '',
            preview: c.lastPreview() ?? '',
            recalled: c.lastRecalled(),
          },
  };
}

function decodeEntry(m: FbMessage): TimelineEntry {
  const elems: Elem[] = [];
  for (let i = 0; i < m.elemsLength(); i++) {
    const e = m.elems(i)!;
    const el: Elem = { type: e.type() };
    const text = e.text();
    if (text !== null) el.text = text;
    const data = e.dataArray();
    if (data !== null) el.data = data.slice();
    const url = e.url();
    if (url !== null) el.url = url;
    const extra = e.extra();
    if (extra !== null) el.extra = extra;
    elems.push(el);
  }
  return {
    messageKey: m.messageKey(),
    conversationType: m.conversationType(),
    fromId: m.fromId() ?? '',
    toId: m.toId() ?? '',
    seq: m.seq(),
    serverTimeMs: m.serverTimeMs(),
    clientTimeMs: m.clientTimeMs(),
    clientMsgId: m.clientMsgId() ?? '',
    elems,
    recalled: m.recalled(),
    fromDevice: m.fromDevice() ?? '',
    entry: m.entry(),
    random: m.random(),
    badgeMode: m.badgeMode(),
    lifeTimeSecs: m.lifeTimeSecs(),
    silent: false,
  };
}

function kindSeqs(n: number, get: (i: number) => { kind(): SyncKind; seq(): bigint } | null): KindSeqPair[] {
  const out: KindSeqPair[] = [];
  for (let i = 0; i < n; i++) {
    const k = get(i);
    if (k) out.push({ kind: k.kind(), seq: k.seq() });
  }
  return out;
}

/** Decodes one whole frame (header included), as one WebSocket message carries it. */
export function decodeFrame(bytes: Uint8Array): ServerFrame {
  if (bytes.length < HEADER_BYTES) throw new FrameError(`frame of ${bytes.length} bytes is shorter than its header`);
  const version = bytes[3];
  const len = bytes[0] | (bytes[1] << 8) | (bytes[2] << 16);
  if (version !== PROTOCOL_VERSION) throw new FrameError(`unsupported frame version ${version}`);
  if (len !== bytes.length - HEADER_BYTES) {
    throw new FrameError(`header says ${len} payload bytes, the message holds ${bytes.length - HEADER_BYTES}`);
  }
  if (len < 8) throw new FrameError(`payload of ${len} bytes is too short`);
  const bb = new flatbuffers.ByteBuffer(bytes.subarray(HEADER_BYTES));
  let f: Frame;
  try {
    f = Frame.getRootAsFrame(bb);
    return decodeBody(f);
  } catch (e) {
    if (e instanceof FrameError) throw e;
    throw new FrameError(`malformed frame: ${(e as Error).message}`);
  }
}

function decodeBody(f: Frame): ServerFrame {
  const requestId = f.requestId();
  const t = f.bodyType();
  switch (t) {
    case Body.LoginAck: {
      const a: FbLoginAck = f.body(new FbLoginAck());
      return {
        type: 'loginAck',
        requestId,
        sessionId: a.sessionId(),
        serverTimeMs: a.serverTimeMs(),
        heartbeatIntervalMs: a.heartbeatIntervalMs(),
        heartbeatTimeoutMs: a.heartbeatTimeoutMs(),
        maxSeqs: kindSeqs(a.maxSeqsLength(), (i) => a.maxSeqs(i)),
        ackedSeqs: kindSeqs(a.ackedSeqsLength(), (i) => a.ackedSeqs(i)),
        maxFrameBytes: a.maxFrameBytes(),
      };
    }
    case Body.Pong: {
      const p: FbPong = f.body(new FbPong());
      return { type: 'pong', requestId, clientTimeMs: p.clientTimeMs(), serverTimeMs: p.serverTimeMs() };
    }
    case Body.SendAck: {
      const a: FbSendAck = f.body(new FbSendAck());
      return {
        type: 'sendAck',
        requestId,
        clientMsgId: a.clientMsgId() ?? '',
        code: a.code(),
        message: a.message() ?? '',
        messageKey: a.messageKey(),
        seq: a.seq(),
        serverTimeMs: a.serverTimeMs(),
      };
    }
    case Body.Push: {
      const p: FbPush = f.body(new FbPush());
      const messages: TimelineEntry[] = [];
      const silent = p.silent();
      for (let i = 0; i < p.messagesLength(); i++) {
        const m = decodeEntry(p.messages(i)!);
        m.silent = silent;
        messages.push(m);
      }
      return { type: 'push', requestId, messages, silent };
    }
    case Body.PullResult: {
      const p: FbPullResult = f.body(new FbPullResult());
      const messages: TimelineEntry[] = [];
      for (let i = 0; i < p.messagesLength(); i++) messages.push(decodeEntry(p.messages(i)!));
      return { type: 'pullResult', requestId, kind: p.kind(), messages, maxSeq: p.maxSeq(), completed: p.completed() };
    }
    case Body.ReadReceiptNotify: {
      const r: FbReadReceiptNotify = f.body(new FbReadReceiptNotify());
      return {
        type: 'readReceiptNotify',
        requestId,
        conversationType: r.conversationType(),
        readerId: r.readerId() ?? '',
        peerId: r.peerId() ?? '',
        readSeq: r.readSeq(),
      };
    }
    case Body.SyncNotify: {
      const s: FbSyncNotify = f.body(new FbSyncNotify());
      return { type: 'syncNotify', requestId, kind: s.kind(), seq: s.seq() };
    }
    case Body.RecallNotify: {
      const r: FbRecallNotify = f.body(new FbRecallNotify());
      return {
        type: 'recallNotify',
        requestId,
        messageKey: r.messageKey(),
        fromId: r.fromId() ?? '',
        toId: r.toId() ?? '',
        seq: r.seq(),
      };
    }
    case Body.ConversationList: {
      const l: FbConversationList = f.body(new FbConversationList());
      const conversations: ConversationInfo[] = [];
      for (let i = 0; i < l.conversationsLength(); i++) conversations.push(decodeConversation(l.conversations(i)!));
      return {
        type: 'conversationList',
        requestId,
        conversations,
        maxSeq: l.maxSeq(),
        completed: l.completed(),
        total: l.total(),
      };
    }
    case Body.Kick: {
      const k: FbKick = f.body(new FbKick());
      return { type: 'kick', requestId, reason: k.reason(), message: k.message() ?? '' };
    }
    case Body.Error: {
      const e: FbError = f.body(new FbError());
      return { type: 'error', requestId, code: e.code(), message: e.message() ?? '' };
    }
    case Body.NONE:
      throw new FrameError('frame without a body');
    default:
      return { type: 'unknown', requestId, bodyType: t };
  }
}
