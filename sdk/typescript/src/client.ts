/**
 * `TernClient`: one logged-in device of one user over WebSocket.
 *
 * What it guarantees (see README.md):
 * - Every timeline entry (message or recall event) of the user's inbox and of the groups
 *   it syncs is reported exactly once per client instance, in seq order per timeline,
 *   across reconnects: pushes and pulled pages are filtered by the sync point of their
 *   timeline (a seq never reported twice), and after every (re)login the client pulls
 *   from its sync point before it lets buffered pushes through (no gaps).
 * - `send()` resolves with the SendAck once the message is durable. Unacknowledged sends
 *   survive reconnects and are sent again, in call order, with the same client message
 *   id, which the server deduplicates: a message is never stored twice. Busy answers
 *   (80009, 50006, 80005: nothing stored) are retried with backoff.
 * - Sends are stored in call order, also across busy refusals: the server refuses a
 *   connection's later sends too once it refused one (PROTOCOL.md, "One sender's
 *   order"), and after a busy refusal the client writes nothing for a backoff, then
 *   writes the oldest unacknowledged send and the rest one at a time until none is left
 *   (then it pipelines again).
 * - Own sends of this instance are reported by `send()` only; the same entries pulled
 *   later are not emitted again as `message` events.
 *
 * All wire work is in `frame.ts`; this module is the protocol's state machine.
 */
import { Emitter } from './emitter.js';
import {
  ClientType,
  ConversationInfo,
  ConversationType,
  decodeFrame,
  Elem,
  ElemType,
  encodeConversationGet,
  encodeConversationSync,
  encodeLogin,
  encodeLogout,
  encodePing,
  encodePull,
  encodePushAck,
  encodeReadReceipt,
  encodeRecall,
  encodeSend,
  EntryKind,
  FrameError,
  KickReason,
  KindSeqPair,
  SendFields,
  ServerFrame,
  SyncKind,
  TimelineEntry,
} from './frame.js';

/** The part of the WebSocket API the client uses: browsers' `WebSocket` and the `ws` package both fit. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Connection state, reported by the `state` event. */
export type ConnectionState = 'idle' | 'connecting' | 'syncing' | 'online' | 'reconnecting' | 'closed';

/** An answer of the server that is not success, or a client-side failure. */
export class TernError extends Error {
  /** A code of PROTOCOL.md §7, or 0 for client-side failures (timeouts, closed client). */
  readonly code: number;
  constructor(code: number, message: string) {
    super(code ? `${code}: ${message}` : message);
    this.name = 'TernError';
    this.code = code;
  }
}

export interface TernClientOptions {
  /** Gateway WebSocket URL, e.g. `ws://127.0.0.1:19000/` (`/user/login` lists them). */
  url: string;
  appId: number;
  userId: string;
  /**
   * The user's signature (PROTOCOL.md §3), or a function that fetches one; a function is
   * called before every login, so an expired signature is replaced on reconnect.
   */
  userSign: string | (() => string | Promise<string>);
  /** Stable id of this device, 1..=64 bytes. (clientType, deviceId) names a device. */
  deviceId: string;
  /** Default: `ClientType.Web`. */
  clientType?: ClientType;
  clientVersion?: string;
  /** WebSocket implementation. Default: `globalThis.WebSocket` (browsers); in Node 20 pass the `ws` package's export. */
  WebSocket?: WebSocketConstructor;
  /**
   * Inbox seq this device already holds (persist `inboxSeq` to resume after a restart).
   * Default: what the server says this device acknowledged (LoginAck `acked_seqs`), 0
   * for a new device: the whole retained history is reported.
   */
  syncPoint?: bigint;
  /** Groups whose timelines to sync, with the group seq held (0n = from the join on). */
  groups?: Record<string, bigint>;
  /** Reconnect backoff: first delay and ceiling, ms (default 250 and 10,000), with jitter. */
  reconnectMinDelayMs?: number;
  reconnectMaxDelayMs?: number;
  /** Ping interval; default the server's `heartbeat_interval_ms`. */
  heartbeatIntervalMs?: number;
  /** A request (login, pull, recall) not answered within this drops the connection (default 15,000 ms). */
  requestTimeoutMs?: number;
  /** Page size of pulls (server caps it at 500; default 200). */
  pullLimit?: number;
}

/** What a successful login told the client. */
export interface LoginInfo {
  sessionId: bigint;
  serverTimeMs: bigint;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  maxSeqs: KindSeqPair[];
  ackedSeqs: KindSeqPair[];
  maxFrameBytes: number;
  /** 1 for the first login of this client, then 2, 3, ... after reconnects. */
  loginCount: number;
}

/** The server's acknowledgement of a send. */
export interface SentMessage {
  clientMsgId: string;
  messageKey: bigint;
  /** Own inbox seq (1:1) or the group seq (group). */
  seq: bigint;
  serverTimeMs: bigint;
  conversationType: ConversationType;
  toId: string;
  elems: Elem[];
}

export interface RecallEvent {
  messageKey: bigint;
  conversationType: ConversationType;
  fromId: string;
  /** The peer (1:1) or the group. */
  toId: string;
  /** The recall event's seq in its timeline. */
  seq: bigint;
}

export interface ReadReceiptEvent {
  conversationType: ConversationType;
  readerId: string;
  peerId: string;
  readSeq: bigint;
}

export interface SyncNotifyEvent {
  kind: SyncKind;
  seq: bigint;
}

/** A page of the conversation list (`getConversations`). */
export interface ConversationPage {
  /** Pinned first, then newest activity first; each with its exact unread count and last message. */
  conversations: ConversationInfo[];
  /** Conversations in the whole list. */
  total: number;
  /** This page is the last. */
  completed: boolean;
  /** The `offset` of the next page. */
  nextOffset: number;
  /** The user's Conversation log seq when the page was made: `syncConversations` from here. */
  maxSeq: bigint;
}

/** Changes of the user's conversation records (`syncConversations`). */
export interface ConversationChanges {
  /**
   * Ascending by `syncSeq`, each a full record: `op` Put (appeared, or pin / mute / extra /
   * read mark changed), Delete (removed on the server: drop it) or ClientDelete (remove it
   * on this device only). Unread counts and last messages are not in sync answers.
   */
  changes: ConversationInfo[];
  /** Sync from here next time. */
  maxSeq: bigint;
}

export interface KickEvent {
  reason: KickReason;
  message: string;
}

export type TernEvents = {
  state: (state: ConnectionState) => void;
  login: (info: LoginInfo) => void;
  /** A timeline entry with `entry = Message` (1:1 or group); `silent` if pushed from a muted conversation. */
  message: (m: TimelineEntry) => void;
  /** A message was recalled (from a RecallNotify or a pulled `entry = Recall` event). */
  recall: (r: RecallEvent) => void;
  readReceipt: (r: ReadReceiptEvent) => void;
  /** The user's profile changed (SyncNotify kind Profile): fetch it over your HTTP back end. */
  profileChanged: (n: SyncNotifyEvent) => void;
  /** Friend list, blacklist or friend requests changed (SyncNotify Friendship / Blacklist / FriendRequest). */
  friendshipChanged: (n: SyncNotifyEvent) => void;
  /** Joined groups or a group's profile changed (SyncNotify GroupList): call `addGroup` for new groups. */
  groupsChanged: (n: SyncNotifyEvent) => void;
  /**
   * The user's conversation records changed (SyncNotify kind Conversation: a conversation
   * appeared, a read on another device, pin / mute / extra / delete): call
   * `syncConversations(yourSeq)` or `getConversations()`. A read sent by this client is
   * not notified back to it.
   */
  conversations: (n: SyncNotifyEvent) => void;
  /** Every SyncNotify, of any kind (Message ones are also handled by the client itself). */
  syncNotify: (n: SyncNotifyEvent) => void;
  /** The server ended the session. Replaced, deleted or admin-kicked sessions are not resumed. */
  kicked: (k: KickEvent) => void;
  /** Something went wrong that no promise reports (fatal login errors, refused read receipts, ...). */
  error: (e: Error) => void;
};

interface PendingSend {
  fields: SendFields;
  /** Of the frame on the wire; 0 while the send waits to be written (again). */
  requestId: number;
  resolve: (m: SentMessage) => void;
  reject: (e: Error) => void;
}

interface PendingRequest {
  resolve: (f: ServerFrame) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Login answers after which reconnecting cannot help. */
const FATAL_LOGIN_CODES = new Set([20001, 20002, 50003, 60000, 60001, 60003, 60004, 60006, 80010]);
/** Send answers that mean "try again later"; nothing was stored. */
const RETRY_SEND_CODES = new Set([80009, 50006, 80005]);
/** Group pull answers meaning the group is not (or no longer) this user's to sync. */
const GROUP_GONE_CODES = new Set([40000, 40006, 40018]);
/** Kicks after which the session must not come back by itself. */
const FINAL_KICKS = new Set([KickReason.ReplacedByNewLogin, KickReason.UserDeleted, KickReason.AdminKick]);
/** Coalesce PushAcks: each is an inbound frame, and those are rate-limited per connection. */
const PUSH_ACK_DELAY_MS = 500;

let idCounter = 0;
/** A client message id unique per sender (random + time + counter), 1..=64 bytes. */
export function newClientMsgId(): string {
  const rnd = Math.floor(Math.random() * 0x100000000).toString(36);
  idCounter = (idCounter + 1) % 0x100000000;
  return `${Date.now().toString(36)}-${rnd}-${idCounter.toString(36)}`;
}

/**
 * A timeline: the user's inbox or one group's. `safe` is the max_seq of the last
 * completed pull: everything at or below it was reported. Above it, `seen` holds the
 * seqs reported since (pushes, own sends): seqs may skip, so a push alone never proves
 * that nothing below it is missing. Every sync pulls from `safe` and skips what `seen`
 * holds, so an entry the server failed to push is reported late rather than never.
 */
interface Timeline {
  safe: bigint;
  seen: Set<bigint>;
  /** Highest seq reported. */
  top: bigint;
  /** `safe` as last acknowledged to the server (PushAck). */
  acked: bigint;
}

function timeline(seq: bigint): Timeline {
  return { safe: seq, seen: new Set(), top: seq, acked: seq };
}

/** Past this many seqs reported above the safe point, a sync runs to move it on. */
const MAX_SEEN_ABOVE_SAFE = 1_000;

export class TernClient extends Emitter<TernEvents> {
  private readonly opts: Required<
    Omit<TernClientOptions, 'syncPoint' | 'groups' | 'heartbeatIntervalMs' | 'WebSocket' | 'clientVersion'>
  > & { heartbeatIntervalMs?: number; clientVersion: string };
  private readonly WS: WebSocketConstructor;
  private ws: WebSocketLike | null = null;
  private stateValue: ConnectionState = 'idle';
  private nextRequestId = 1;
  private requests = new Map<number, PendingRequest>();
  /** Unacknowledged sends in call order (a Map iterates in insertion order). */
  private sends = new Map<string, PendingSend>();
  /** After a busy refusal: sends are written one at a time until none is left unacknowledged. */
  private sendOneByOne = false;
  /** The backoff after a busy refusal: while set, no send is written. */
  private sendHold: ReturnType<typeof setTimeout> | null = null;
  /** Busy refusals since the last accepted send: the backoff doubles with each. */
  private sendRefusals = 0;
  private inbox: Timeline;
  private groups = new Map<string, Timeline>();
  private inboxFromServerAck: boolean;
  private buffered: ServerFrame[] = [];
  private syncing = false;
  private resyncWanted = false;
  private pushAckTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private reconnectAttempt = 0;
  private lastReceivedMs = 0;
  private loginCount = 0;
  private stopped = false;
  private firstLogin: { resolve: (i: LoginInfo) => void; reject: (e: Error) => void } | null = null;
  private loginInfo: LoginInfo | null = null;
  private latestSeqs = new Map<SyncKind, bigint>();

  constructor(options: TernClientOptions) {
    super();
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new TernError(0, "no WebSocket implementation: pass options.WebSocket (in Node 20: `import WebSocket from 'ws'`)");
    }
    const bytes = (s: string) => new TextEncoder().encode(s).length;
    if (bytes(options.userId) < 1 || bytes(options.userId) > 64) throw new TernError(0, 'userId must be 1..=64 bytes');
    if (bytes(options.deviceId) < 1 || bytes(options.deviceId) > 64) throw new TernError(0, 'deviceId must be 1..=64 bytes');
    this.WS = WS;
    this.opts = {
      url: options.url,
      appId: options.appId,
      userId: options.userId,
      userSign: options.userSign,
      deviceId: options.deviceId,
      clientType: options.clientType ?? ClientType.Web,
      clientVersion: options.clientVersion ?? 'tern-ts/0.1.0',
      reconnectMinDelayMs: options.reconnectMinDelayMs ?? 250,
      reconnectMaxDelayMs: options.reconnectMaxDelayMs ?? 10_000,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      requestTimeoutMs: options.requestTimeoutMs ?? 15_000,
      pullLimit: Math.max(1, Math.min(options.pullLimit ?? 200, 500)),
    };
    this.inbox = timeline(options.syncPoint ?? 0n);
    this.inboxFromServerAck = options.syncPoint === undefined;
    for (const [g, seq] of Object.entries(options.groups ?? {})) {
      this.groups.set(g, timeline(seq));
    }
  }

  /** The connection state. */
  get state(): ConnectionState {
    return this.stateValue;
  }

  get userId(): string {
    return this.opts.userId;
  }

  get deviceId(): string {
    return this.opts.deviceId;
  }

  /**
   * Inbox seq up to which everything was reported (the last completed pull's max_seq):
   * persist it and pass it as `syncPoint` to resume. Entries above it that this instance
   * reported from pushes may be reported again by a client resumed from it.
   */
  get inboxSeq(): bigint {
    return this.inbox.safe;
  }

  /** Highest inbox seq reported so far. */
  get inboxTopSeq(): bigint {
    return this.inbox.top;
  }

  /** Group seqs held, by group id (persist and pass as `groups` to resume). */
  get groupSeqs(): Record<string, bigint> {
    const out: Record<string, bigint> = {};
    for (const [g, t] of this.groups) out[g] = t.safe;
    return out;
  }

  /** What the last login answered (null before the first). */
  get login(): LoginInfo | null {
    return this.loginInfo;
  }

  /** The newest seq the server announced per sync kind (LoginAck and SyncNotify). */
  latestSeq(kind: SyncKind): bigint {
    return this.latestSeqs.get(kind) ?? 0n;
  }

  /**
   * Connects, logs in and syncs. Resolves after the first login's sync; rejects if the
   * first login fails for good (bad signature, unknown user, ...). After that the client
   * keeps itself connected until `close()`.
   */
  connect(): Promise<LoginInfo> {
    if (this.stopped) return Promise.reject(new TernError(0, 'client is closed'));
    if (this.stateValue !== 'idle') return Promise.reject(new TernError(0, 'connect() was already called'));
    return new Promise((resolve, reject) => {
      this.firstLogin = { resolve, reject };
      this.open();
    });
  }

  /** Logs out and closes for good; pending sends and requests are rejected. */
  close(): void {
    if (this.stopped) return;
    this.stopped = true;
    const ws = this.ws;
    if (ws && ws.readyState === 1) {
      try {
        ws.send(encodeLogout(this.allocRequestId()));
      } catch {
        // closing anyway
      }
    }
    this.teardown(new TernError(0, 'client closed'));
    for (const s of this.sends.values()) s.reject(new TernError(0, 'client closed before the send was acknowledged'));
    this.sends.clear();
    this.sendsDrained();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.failFirstLogin(new TernError(0, 'client closed'));
    this.setState('closed');
  }

  /**
   * Drops the connection at once (as a network failure would) and reconnects with
   * backoff. Useful after a network change; tests use it to cut connections under load.
   */
  reconnect(): void {
    if (this.stopped || !this.ws) return;
    this.connectionLost(new TernError(0, 'reconnect requested'));
  }

  /** Starts syncing a group's timeline (e.g. after `groupsChanged`), from `fromSeq` (default 0: from the join on). */
  addGroup(groupId: string, fromSeq = 0n): void {
    if (this.groups.has(groupId)) return;
    this.groups.set(groupId, timeline(fromSeq));
    if (this.stateValue === 'online' || this.stateValue === 'syncing') this.requestSync();
  }

  /** Stops syncing a group (e.g. after leaving it). */
  removeGroup(groupId: string): void {
    this.groups.delete(groupId);
  }

  /** Sends a text message to a user (1:1). */
  sendText(toId: string, text: string): Promise<SentMessage> {
    return this.send({ toId, elems: [{ type: ElemType.Text, text }] });
  }

  /**
   * Sends a message. Resolves once the server acknowledged it (durable); rejects with a
   * `TernError` carrying the server's code if it was refused. While offline the send
   * waits and goes out after the next login; it is resent with the same client message
   * id after a reconnect, so it is stored once.
   */
  send(msg: {
    toId: string;
    elems: Elem[];
    conversationType?: ConversationType;
    clientMsgId?: string;
  }): Promise<SentMessage> {
    if (this.stopped) return Promise.reject(new TernError(0, 'client is closed'));
    const clientMsgId = msg.clientMsgId ?? newClientMsgId();
    const conversationType = msg.conversationType ?? ConversationType.Single;
    if (this.sends.has(clientMsgId)) return Promise.reject(new TernError(0, `a send with id ${clientMsgId} is in flight`));
    if (conversationType === ConversationType.Group) this.addGroup(msg.toId, 0n);
    const fields: SendFields = {
      clientMsgId,
      conversationType,
      toId: msg.toId,
      elems: msg.elems,
      clientTimeMs: BigInt(Date.now()),
    };
    return new Promise((resolve, reject) => {
      this.sends.set(clientMsgId, { fields, requestId: 0, resolve, reject });
      this.writeSends();
    });
  }

  /** Sends a text message to a group. */
  sendGroupText(groupId: string, text: string): Promise<SentMessage> {
    return this.send({ toId: groupId, conversationType: ConversationType.Group, elems: [{ type: ElemType.Text, text }] });
  }

  /**
   * Recalls one of your messages. Resolves when the server confirmed it; every device of
   * both parties (or every group member) then gets a `recall` event, this one included.
   */
  async recall(messageKey: bigint, peerId: string, conversationType = ConversationType.Single): Promise<void> {
    const reply = await this.request((id) => encodeRecall(id, messageKey, conversationType, peerId));
    if (reply.type === 'error' && reply.code === 200) return;
    if (reply.type === 'error') throw new TernError(reply.code, reply.message);
    throw new TernError(0, `unexpected answer to Recall: ${reply.type}`);
  }

  /**
   * Reports that the user read the conversation with `peerId` (or the group) up to
   * `readSeq` (own inbox seq, or group seq). The server answers only failures, which
   * arrive as `error` events.
   */
  markRead(peerId: string, readSeq: bigint, conversationType = ConversationType.Single): void {
    const ws = this.ws;
    if (!ws || this.stateValue !== 'online') throw new TernError(0, 'not online');
    const id = this.allocRequestId();
    this.watchForError(id, 'read receipt');
    ws.send(encodeReadReceipt(id, conversationType, peerId, readSeq));
  }

  /**
   * Marks a conversation read up to its newest message (`lastMessage.seq`, or `readSeq`
   * if given): the read receipt above, for an entry of `getConversations`. Its unread
   * count goes to 0 on the server and the user's other devices get a `conversations`
   * event. Does nothing if there is nothing to read.
   */
  markConversationRead(
    c: Pick<ConversationInfo, 'conversationType' | 'targetId' | 'lastMessage' | 'readSeq'>,
    readSeq?: bigint,
  ): void {
    const upTo = readSeq ?? c.lastMessage?.seq ?? 0n;
    if (upTo === 0n || upTo <= c.readSeq) return;
    this.markRead(c.targetId, upTo, c.conversationType);
  }

  /**
   * A page of the user's conversation list (ConversationGet): pinned first, then newest
   * activity first, with exact unread counts and last messages. `limit` defaults to 100
   * (the server caps it at 1000).
   */
  async getConversations(page: { offset?: number; limit?: number } = {}): Promise<ConversationPage> {
    const offset = page.offset ?? 0;
    const limit = page.limit ?? 100;
    if (!Number.isInteger(offset) || offset < 0 || offset > 0xffffffff) throw new TernError(0, 'offset must be a u32');
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new TernError(0, 'limit must be 1..=1000');
    const r = await this.conversationRequest((id) => encodeConversationGet(id, offset, limit), 'ConversationGet');
    return {
      conversations: r.conversations,
      total: r.total,
      completed: r.completed,
      nextOffset: offset + r.conversations.length,
      maxSeq: r.maxSeq,
    };
  }

  /**
   * The changes of the user's conversation records after `afterSeq` (ConversationSync),
   * paged through until the answer reaches the server's log seq (`maxSeq`): persist
   * `maxSeq` and pass it next time (0n: every record). `limit` is the page size
   * (default 100, at most 1000).
   */
  async syncConversations(afterSeq: bigint, limit = 100): Promise<ConversationChanges> {
    if (afterSeq < 0n) throw new TernError(0, 'afterSeq must not be negative');
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new TernError(0, 'limit must be 1..=1000');
    const changes: ConversationInfo[] = [];
    let after = afterSeq;
    let maxSeq = afterSeq;
    for (;;) {
      const from = after;
      const r = await this.conversationRequest((id) => encodeConversationSync(id, from, limit), 'ConversationSync');
      changes.push(...r.conversations);
      if (r.maxSeq > maxSeq) maxSeq = r.maxSeq;
      const last = r.conversations.length ? r.conversations[r.conversations.length - 1].syncSeq : from;
      // Complete, or no progress (the next notify retries): stop rather than loop.
      if (r.completed || last <= from) {
        // Incomplete without progress: only what was seen counts as synced.
        if (!r.completed) maxSeq = last;
        return { changes, maxSeq };
      }
      after = last;
    }
  }

  private async conversationRequest(
    encode: (id: number) => Uint8Array,
    what: string,
  ): Promise<Extract<ServerFrame, { type: 'conversationList' }>> {
    const r = await this.request(encode);
    if (r.type === 'error') throw new TernError(r.code, r.message);
    if (r.type !== 'conversationList') throw new TernError(0, `unexpected answer to ${what}: ${r.type}`);
    return r;
  }

  // ---- connection lifecycle ----

  private setState(s: ConnectionState): void {
    if (this.stateValue === s) return;
    this.stateValue = s;
    this.emit('state', s);
  }

  private allocRequestId(): number {
    const id = this.nextRequestId;
    this.nextRequestId = this.nextRequestId >= 0xfffffff0 ? 1 : this.nextRequestId + 1;
    return id;
  }

  private open(): void {
    if (this.stopped) return;
    this.setState(this.loginCount === 0 ? 'connecting' : 'reconnecting');
    let ws: WebSocketLike;
    try {
      ws = new this.WS(this.opts.url);
    } catch (e) {
      this.scheduleReconnect(e as Error);
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    // Hold timeline frames back from the start: a Push can arrive in the same read as
    // the LoginAck, and be handled before the login's continuation starts the sync. Let
    // through before the pull, it would move the seq past entries the pull must bring.
    this.syncing = true;
    this.buffered = [];
    ws.onopen = () => {
      if (this.ws !== ws) return;
      void this.logIn(ws);
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastReceivedMs = Date.now();
      const data = ev.data;
      let bytes: Uint8Array;
      if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
      else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      else {
        this.connectionLost(new FrameError('text WebSocket message from the server'));
        return;
      }
      let frame: ServerFrame;
      try {
        frame = decodeFrame(bytes);
      } catch (e) {
        this.connectionLost(e as Error);
        return;
      }
      this.onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.connectionLost(new TernError(0, `connection closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ''})`));
    };
    ws.onerror = () => {
      // onclose follows and does the work.
    };
  }

  private async logIn(ws: WebSocketLike): Promise<void> {
    let sign: string;
    try {
      sign = typeof this.opts.userSign === 'function' ? await this.opts.userSign() : this.opts.userSign;
    } catch (e) {
      this.connectionLost(new TernError(0, `fetching the signature failed: ${(e as Error).message}`));
      return;
    }
    if (this.ws !== ws) return;
    let reply: ServerFrame;
    try {
      reply = await this.request((id) =>
        encodeLogin(id, {
          appId: this.opts.appId,
          userId: this.opts.userId,
          userSign: sign,
          clientType: this.opts.clientType,
          deviceId: this.opts.deviceId,
          clientVersion: this.opts.clientVersion,
        }),
      );
    } catch {
      return; // the connection is gone; connectionLost already scheduled what follows
    }
    if (this.ws !== ws) return;
    if (reply.type === 'error') {
      const err = new TernError(reply.code, `login refused: ${reply.message}`);
      if (FATAL_LOGIN_CODES.has(reply.code) && !(reply.code === 60004 && typeof this.opts.userSign === 'function')) {
        this.emit('error', err);
        this.failFirstLogin(err);
        this.close();
      } else {
        this.connectionLost(err);
      }
      return;
    }
    if (reply.type !== 'loginAck') {
      this.connectionLost(new TernError(0, `unexpected answer to Login: ${reply.type}`));
      return;
    }
    this.loginCount += 1;
    this.reconnectAttempt = 0;
    for (const k of reply.maxSeqs) this.noteSeq(k.kind, k.seq);
    if (this.inboxFromServerAck) {
      // First login of a client given no sync point: resume where the server says this
      // device acknowledged (0 for a new device).
      this.inboxFromServerAck = false;
      const acked = reply.ackedSeqs.find((k) => k.kind === SyncKind.Message)?.seq ?? 0n;
      if (acked > this.inbox.safe) this.inbox = timeline(acked);
    }
    const info: LoginInfo = {
      sessionId: reply.sessionId,
      serverTimeMs: reply.serverTimeMs,
      heartbeatIntervalMs: reply.heartbeatIntervalMs,
      heartbeatTimeoutMs: reply.heartbeatTimeoutMs,
      maxSeqs: reply.maxSeqs,
      ackedSeqs: reply.ackedSeqs,
      maxFrameBytes: reply.maxFrameBytes,
      loginCount: this.loginCount,
    };
    this.loginInfo = info;
    this.startHeartbeat(info);
    this.emit('login', info);
    this.setState('syncing');
    await this.runSync(ws);
    if (this.ws !== ws) return; // the sync failed or the connection dropped: a new login follows
    this.setState('online');
    // Sends that were waiting (offline, or unacknowledged when the last connection
    // dropped), in the order they were made: the server deduplicates resends by id.
    this.writeSends();
    const first = this.firstLogin;
    this.firstLogin = null;
    first?.resolve(info);
  }

  private startHeartbeat(info: LoginInfo): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    const interval = Math.max(100, this.opts.heartbeatIntervalMs ?? info.heartbeatIntervalMs ?? 30_000);
    // Silence longer than an interval plus a generous answer time means the path is dead
    // even if the socket has not noticed: drop it and reconnect.
    const deadAfter = interval + Math.min(this.opts.requestTimeoutMs, info.heartbeatTimeoutMs || 90_000);
    this.lastReceivedMs = Date.now();
    this.heartbeatTimer = setInterval(() => {
      const ws = this.ws;
      if (!ws || ws.readyState !== 1) return;
      if (Date.now() - this.lastReceivedMs > deadAfter) {
        this.connectionLost(new TernError(0, 'no answer from the server within the heartbeat timeout'));
        return;
      }
      ws.send(encodePing(this.allocRequestId(), BigInt(Date.now())));
    }, interval);
  }

  /** Clears the connection's state (timers, requests, buffered frames). */
  private teardown(reason: Error): void {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      // Closing a socket that is still connecting makes Node's `ws` emit an error, which
      // would be thrown if nothing listened.
      ws.onerror = () => {};
      try {
        ws.close();
      } catch {
        // already closed
      }
    }
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    if (this.pushAckTimer) clearTimeout(this.pushAckTimer);
    this.pushAckTimer = null;
    for (const r of this.requests.values()) {
      clearTimeout(r.timer);
      r.reject(reason);
    }
    this.requests.clear();
    // Buffered pushes are dropped: the next login's pull brings the same entries.
    this.buffered = [];
    this.syncing = false;
    this.resyncWanted = false;
    for (const s of this.sends.values()) s.requestId = 0;
  }

  private connectionLost(reason: Error): void {
    if (this.stopped) return;
    this.teardown(reason);
    this.scheduleReconnect(reason);
  }

  private scheduleReconnect(reason: Error): void {
    if (this.stopped) return;
    this.setState('reconnecting');
    const base = Math.min(this.opts.reconnectMaxDelayMs, this.opts.reconnectMinDelayMs * 2 ** this.reconnectAttempt);
    this.reconnectAttempt = Math.min(this.reconnectAttempt + 1, 30);
    const delay = base / 2 + Math.random() * (base / 2);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.open();
    }, delay);
    void reason;
  }

  private failFirstLogin(e: Error): void {
    const first = this.firstLogin;
    this.firstLogin = null;
    first?.reject(e);
  }

  // ---- requests ----

  /** Sends a request frame and waits for the frame with its request id. */
  private request(encode: (id: number) => Uint8Array): Promise<ServerFrame> {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return Promise.reject(new TernError(0, 'not connected'));
    const id = this.allocRequestId();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.requests.delete(id);
        reject(new TernError(0, 'request timed out'));
        // A request unanswered this long means a dead or stuck connection.
        if (this.ws === ws) this.connectionLost(new TernError(0, 'request timed out'));
      }, this.opts.requestTimeoutMs);
      this.requests.set(id, { resolve, reject, timer });
      ws.send(encode(id));
    });
  }

  /** Fire-and-forget requests answer only failures: report them as `error` events. */
  private watchForError(id: number, what: string): void {
    const timer = setTimeout(() => this.requests.delete(id), this.opts.requestTimeoutMs);
    this.requests.set(id, {
      resolve: (f) => {
        if (f.type === 'error' && f.code !== 200) this.emit('error', new TernError(f.code, `${what} refused: ${f.message}`));
      },
      reject: () => {},
      timer,
    });
  }

  // ---- sends ----
  //
  // Order. The server stores one connection's sends in the order it accepts them, and a
  // busy answer (RETRY_SEND_CODES) stores nothing: a refused send retried on its own
  // would be stored behind the sends written after it. So after a busy refusal nothing
  // is written for a backoff; then the oldest unacknowledged send is written first and
  // the rest follow one at a time, each once the one before is answered, until none is
  // left unacknowledged; then the client pipelines again. The server holds the
  // connection's sends written after a refused one (refused too, until the refused one
  // comes again: PROTOCOL.md "One sender's order"); they come back here and are written
  // again in call order. One at a time rather than pipelined, so a retry refused again
  // costs one refusal, not one per send behind it.

  /**
   * Writes the sends waiting to be written, in call order: all of them, or after a busy
   * refusal only the oldest, and only when no other send is on the wire.
   */
  private writeSends(): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1 || this.stateValue !== 'online' || this.sendHold) return;
    let onWire = 0;
    if (this.sendOneByOne) for (const p of this.sends.values()) if (p.requestId !== 0) onWire++;
    for (const p of this.sends.values()) {
      if (p.requestId !== 0) continue;
      if (this.sendOneByOne && onWire > 0) return;
      p.requestId = this.allocRequestId();
      ws.send(encodeSend(p.requestId, p.fields));
      onWire++;
    }
  }

  private findSendByRequest(requestId: number): PendingSend | undefined {
    if (requestId === 0) return undefined;
    for (const p of this.sends.values()) if (p.requestId === requestId) return p;
    return undefined;
  }

  /** A busy answer: `p` waits to be written again, and the queue holds for a backoff. */
  private sendRefused(p: PendingSend): void {
    p.requestId = 0;
    this.sendOneByOne = true;
    if (this.sendHold) return; // sends refused together share one backoff
    // 100 ms upwards, doubling while sends keep being refused, with jitter (PROTOCOL.md).
    const delay = Math.min(5_000, 100 * 2 ** Math.min(this.sendRefusals, 6) * (1 + Math.random() / 2));
    this.sendRefusals += 1;
    this.sendHold = setTimeout(() => {
      this.sendHold = null;
      this.writeSends();
    }, delay);
  }

  /** `p` is acknowledged or refused for good: the next send may go. */
  private sendDone(p: PendingSend): void {
    this.sends.delete(p.fields.clientMsgId);
    if (this.sends.size === 0) this.sendsDrained();
    else if (this.sendOneByOne) this.writeSends();
  }

  /** Nothing unacknowledged: busy refusals are behind, pipeline again. */
  private sendsDrained(): void {
    this.sendOneByOne = false;
    this.sendRefusals = 0;
    if (this.sendHold) clearTimeout(this.sendHold);
    this.sendHold = null;
  }

  private failSend(p: PendingSend, code: number, message: string): void {
    this.sendDone(p);
    p.reject(new TernError(code, message));
  }

  private onSendAck(f: Extract<ServerFrame, { type: 'sendAck' }>): void {
    const p = this.findSendByRequest(f.requestId) ?? this.sends.get(f.clientMsgId);
    if (!p) return; // an ack of a send already settled (e.g. resolved from a pulled entry)
    if (f.code === 200) {
      this.sendRefusals = 0;
      this.settleSend(p, { messageKey: f.messageKey, seq: f.seq, serverTimeMs: f.serverTimeMs });
    } else if (RETRY_SEND_CODES.has(f.code)) {
      if (p.requestId === f.requestId) this.sendRefused(p); // else a stale answer: p is on the wire again
    } else {
      this.failSend(p, f.code, f.message);
    }
  }

  private settleSend(p: PendingSend, ack: { messageKey: bigint; seq: bigint; serverTimeMs: bigint }): void {
    this.sendDone(p);
    const t = this.timelineOf(p.fields.conversationType, p.fields.toId, true)!;
    this.markSeen(t, ack.seq);
    p.resolve({
      clientMsgId: p.fields.clientMsgId,
      messageKey: ack.messageKey,
      seq: ack.seq,
      serverTimeMs: ack.serverTimeMs,
      conversationType: p.fields.conversationType,
      toId: p.fields.toId,
      elems: p.fields.elems,
    });
  }

  // ---- inbound frames ----

  private onFrame(f: ServerFrame): void {
    if (f.requestId !== 0) {
      const r = this.requests.get(f.requestId);
      if (r) {
        this.requests.delete(f.requestId);
        clearTimeout(r.timer);
        r.resolve(f);
        return;
      }
    }
    switch (f.type) {
      case 'sendAck':
        this.onSendAck(f);
        return;
      case 'error': {
        const p = this.findSendByRequest(f.requestId);
        if (p) {
          if (RETRY_SEND_CODES.has(f.code)) this.sendRefused(p);
          else this.failSend(p, f.code, f.message);
          return;
        }
        this.emit('error', new TernError(f.code, f.message));
        return;
      }
      case 'push':
      case 'recallNotify':
        if (this.syncing) this.buffered.push(f);
        else this.applyTimelineFrame(f);
        return;
      case 'syncNotify':
        this.onSyncNotify(f.kind, f.seq);
        return;
      case 'readReceiptNotify':
        this.emit('readReceipt', {
          conversationType: f.conversationType,
          readerId: f.readerId,
          peerId: f.peerId,
          readSeq: f.readSeq,
        });
        return;
      case 'kick': {
        this.emit('kicked', { reason: f.reason, message: f.message });
        if (FINAL_KICKS.has(f.reason)) {
          this.emit('error', new TernError(0, `session ended by the server (kick reason ${KickReason[f.reason]})`));
          this.close();
        }
        // Otherwise the close that follows reconnects.
        return;
      }
      default:
        return; // pong, unknown bodies, late answers of timed-out requests
    }
  }

  private noteSeq(kind: SyncKind, seq: bigint): void {
    if (seq > (this.latestSeqs.get(kind) ?? 0n)) this.latestSeqs.set(kind, seq);
  }

  private onSyncNotify(kind: SyncKind, seq: bigint): void {
    this.noteSeq(kind, seq);
    const ev = { kind, seq };
    this.emit('syncNotify', ev);
    switch (kind) {
      case SyncKind.Message:
        if (seq > this.inbox.top) this.requestSync();
        break;
      case SyncKind.Profile:
        this.emit('profileChanged', ev);
        break;
      case SyncKind.Friendship:
      case SyncKind.Blacklist:
      case SyncKind.FriendRequest:
        this.emit('friendshipChanged', ev);
        break;
      case SyncKind.GroupList:
        this.emit('groupsChanged', ev);
        break;
      case SyncKind.Conversation:
        this.emit('conversations', ev);
        break;
      default:
        break;
    }
  }

  /** The timeline an entry belongs to; `create` adds unknown groups. */
  private timelineOf(type: ConversationType, toId: string, create: boolean): Timeline | undefined {
    if (type !== ConversationType.Group) return this.inbox;
    let t = this.groups.get(toId);
    if (!t && create) {
      t = timeline(0n);
      this.groups.set(toId, t);
    }
    return t;
  }

  private applyTimelineFrame(f: ServerFrame): void {
    if (f.type === 'push') {
      for (const m of f.messages) this.deliver(m);
    } else if (f.type === 'recallNotify') {
      // RecallNotify has no conversation type: a known group named in to_id (that is
      // not this user) makes it a group recall. See the SDK README's protocol notes.
      const isGroup = f.toId !== this.opts.userId && this.groups.has(f.toId);
      const type = isGroup ? ConversationType.Group : ConversationType.Single;
      const t = this.timelineOf(type, f.toId, false)!;
      if (!this.markSeen(t, f.seq)) return;
      this.emit('recall', { messageKey: f.messageKey, conversationType: type, fromId: f.fromId, toId: f.toId, seq: f.seq });
    }
    this.schedulePushAck();
  }

  /** Reports a timeline entry unless its seq was reported already. */
  private deliver(m: TimelineEntry): void {
    const t = this.timelineOf(m.conversationType, m.toId, true)!;
    if (!this.markSeen(t, m.seq)) return;
    if (m.entry === EntryKind.Recall) {
      this.emit('recall', {
        messageKey: m.messageKey,
        conversationType: m.conversationType,
        fromId: m.fromId,
        toId: m.toId,
        seq: m.seq,
      });
      return;
    }
    if (m.entry !== EntryKind.Message) return; // an event kind this SDK does not know
    // Our own send whose ack was lost with a connection: the entry is the ack.
    if (m.fromId === this.opts.userId && m.fromDevice === this.opts.deviceId) {
      const p = this.sends.get(m.clientMsgId);
      if (p && p.fields.conversationType === m.conversationType && p.fields.toId === m.toId) {
        this.settleSend(p, { messageKey: m.messageKey, seq: m.seq, serverTimeMs: m.serverTimeMs });
        return;
      }
    }
    this.emit('message', m);
  }

  /** Records `seq` as reported; false if it was already. May start a sync to move `safe` on. */
  private markSeen(t: Timeline, seq: bigint): boolean {
    if (seq <= t.safe || t.seen.has(seq)) return false;
    t.seen.add(seq);
    if (seq > t.top) t.top = seq;
    if (t.seen.size > MAX_SEEN_ABOVE_SAFE && !this.syncing && this.stateValue === 'online') this.requestSync();
    return true;
  }

  private schedulePushAck(): void {
    if (this.pushAckTimer) return;
    this.pushAckTimer = setTimeout(() => {
      this.pushAckTimer = null;
      this.sendPushAcks();
    }, PUSH_ACK_DELAY_MS);
  }

  private sendPushAcks(): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return;
    // Only the safe point: acknowledging a pushed seq could hide an entry below it that
    // was never pushed from this device's next login.
    if (this.inbox.safe > this.inbox.acked) {
      ws.send(encodePushAck(this.allocRequestId(), SyncKind.Message, this.inbox.safe));
      this.inbox.acked = this.inbox.safe;
    }
    // Group timelines are not acked: the server keeps no per-device point in a group
    // timeline (gateways drop group PushAcks, PROTOCOL.md); this client keeps its own
    // group sync points and resumes from them.
  }

  // ---- sync ----

  private requestSync(): void {
    const ws = this.ws;
    if (!ws) return;
    if (this.syncing) {
      this.resyncWanted = true;
      return;
    }
    void this.runSync(ws);
  }

  /**
   * Pulls every timeline from its sync point until complete, holding pushes back
   * meanwhile, then lets them through (those the pull already brought are dropped by
   * seq). Runs again if a SyncNotify asked for more while it ran.
   */
  private async runSync(ws: WebSocketLike): Promise<void> {
    this.syncing = true;
    try {
      do {
        this.resyncWanted = false;
        await this.pullTimeline(ws, this.inbox, undefined);
        for (const [g, t] of [...this.groups]) {
          if (this.ws !== ws) return;
          try {
            await this.pullTimeline(ws, t, g);
          } catch (e) {
            if (e instanceof TernError && GROUP_GONE_CODES.has(e.code)) {
              // Not (or no longer) a member, or no such group: stop syncing it.
              this.groups.delete(g);
              this.emit('error', new TernError(e.code, `group ${g} not synced: ${e.message}`));
            } else throw e;
          }
        }
      } while (this.resyncWanted && this.ws === ws);
    } catch (e) {
      // A pull that failed (busy, rate-limited, timed out) leaves a possible gap: never
      // go on as if synced. Drop the connection; the next login pulls again.
      if (this.ws === ws) {
        if (e instanceof TernError && e.code !== 0) this.emit('error', new TernError(e.code, `sync failed: ${e.message}`));
        this.connectionLost(e as Error);
      }
      return;
    } finally {
      if (this.ws === ws) {
        this.syncing = false;
        const held = this.buffered;
        this.buffered = [];
        for (const f of held) this.applyTimelineFrame(f);
        this.sendPushAcks();
      }
    }
  }

  private async pullTimeline(ws: WebSocketLike, t: Timeline, groupId: string | undefined): Promise<void> {
    let after = t.safe;
    for (;;) {
      if (this.ws !== ws) throw new TernError(0, 'connection dropped');
      const from = after;
      const r = await this.request((id) => encodePull(id, SyncKind.Message, from, this.opts.pullLimit, groupId));
      if (r.type === 'error') throw new TernError(r.code, r.message);
      if (r.type !== 'pullResult') throw new TernError(0, `unexpected answer to Pull: ${r.type}`);
      for (const m of r.messages) {
        // Pulled entries of a group carry the group in to_id; make sure they land in `t`.
        if (groupId === undefined || m.toId === groupId) this.deliver(m);
      }
      if (r.completed) {
        // Nothing at or below max_seq can appear later (PROTOCOL.md "Seqs").
        if (r.maxSeq > t.safe) t.safe = r.maxSeq;
        if (t.safe > t.top) t.top = t.safe;
        for (const s of t.seen) if (s <= t.safe) t.seen.delete(s);
        return;
      }
      const last = r.messages.length ? r.messages[r.messages.length - 1].seq : from;
      // No progress: stop rather than loop; the next sync (SyncNotify, login) retries.
      if (last <= from) return;
      after = last;
    }
  }
}
