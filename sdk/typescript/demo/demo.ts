/**
 * The web chat page served by `tern` at /demo (logic/src/http/demo/index.html), built on
 * the SDK. Bundled by `npm run build:demo` into logic/src/http/demo/demo.js, which is
 * committed and embedded in the binary; `scripts/sdk-test` rebuilds it and fails on drift.
 *
 * Sign-in asks the server's development-only `/demo/session` for a signature (or takes one
 * typed in when the server has configured apps), then the page shows the user's 1:1
 * timeline from the beginning of retention (it pulls from seq 0), live pushes, and lets
 * the user recall their own messages. "#name" in the "to" field sends to the group
 * "name"; the page syncs the groups the user is in. The tab remembers who signed in (sessionStorage),
 * so a reload signs in again and catches up by pull.
 *
 * The conversation list (ConversationGet) shows each conversation's exact unread count
 * and last message, refreshed live: on pushes, and on SyncNotify of kind Conversation
 * (another device read, pin / mute / delete over HTTP). The open conversation is the one
 * the "to" field names (clicking a conversation opens it): its messages are marked read
 * (a read receipt) as they arrive, and opening one reads it up to its newest message.
 */
import { ConversationInfo, ConversationType, TernClient, TernError, TimelineEntry } from '../src/index.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

interface Session {
  appId: number;
  userId: string;
  userSign: string;
  wsUrls: string[];
  /** Groups the user is a member of (the development endpoint lists them). */
  groups?: string[];
}

let client: TernClient | null = null;
const items = new Map<string, HTMLLIElement>();
/**
 * Read marks this page sent, by conversation (`convKey`): a read receipt has no success
 * answer and the server applies it concurrently with the next ConversationGet, so a list
 * fetched right after a read may still count the messages read; those are not shown.
 */
const readUpTo = new Map<string, bigint>();
let conversations: ConversationInfo[] = [];
let refreshTimer: ReturnType<typeof setTimeout> | null = null;
let refreshing = false;
let refreshAgain = false;

function showError(e: unknown): void {
  $('error').textContent = e instanceof Error ? e.message : String(e);
}

async function fetchSession(userId: string): Promise<Session | null> {
  const res = await fetch('/demo/session', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId }),
  });
  const env = (await res.json()) as { code: number; msg: string; data: Session };
  if (env.code === 90004) return null; // no development app: signatures come from elsewhere
  if (env.code !== 200) throw new TernError(env.code, env.msg);
  return env.data;
}

function deviceId(userId: string): string {
  const key = `tern-demo-device-${userId}`;
  let id = sessionStorage.getItem(key);
  if (!id) {
    id = `web-${Math.random().toString(36).slice(2, 10)}`;
    sessionStorage.setItem(key, id);
  }
  return id;
}

interface Shown {
  key: bigint;
  group: boolean;
  fromId: string;
  toId: string;
  text: string;
  seq: bigint;
  recalled: boolean;
}

function render(m: Shown): void {
  const me = client!.userId;
  const id = m.key.toString();
  let li = items.get(id);
  if (!li) {
    li = document.createElement('li');
    li.dataset.key = id;
    items.set(id, li);
    $('messages').appendChild(li);
  }
  li.dataset.seq = m.seq.toString();
  li.className = m.fromId === me ? 'mine' : 'theirs';
  const bubble = document.createElement('span');
  bubble.className = 'bubble';
  const meta = document.createElement('span');
  meta.className = 'meta';
  if (m.group) meta.textContent = m.fromId === me ? `in #${m.toId}` : `in #${m.toId} from ${m.fromId}`;
  else meta.textContent = m.fromId === me ? `to ${m.toId}` : `from ${m.fromId}`;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = m.recalled ? 'message recalled' : m.text;
  bubble.append(meta, body);
  if (m.fromId === me && !m.recalled) {
    const b = document.createElement('button');
    b.className = 'recall';
    b.textContent = 'Recall';
    const type = m.group ? ConversationType.Group : ConversationType.Single;
    b.onclick = () => client!.recall(m.key, m.toId, type).catch(showError);
    bubble.appendChild(b);
  }
  if (m.recalled) li.classList.add('recalled');
  li.replaceChildren(bubble);
  $('messages').scrollTop = $('messages').scrollHeight;
}

const convKey = (type: ConversationType, target: string) => `${type}:${target}`;

/** The conversation the "to" field names: "#g" the group g, anything else a user. */
function openConversation(): string | null {
  const to = ($('peer') as HTMLInputElement).value.trim();
  if (!to) return null;
  return to.startsWith('#') ? convKey(ConversationType.Group, to.slice(1)) : convKey(ConversationType.Single, to);
}

/** Sends a read receipt up to `seq` unless one as high was sent already. */
function readConversation(type: ConversationType, target: string, seq: bigint): void {
  const key = convKey(type, target);
  if (!client || client.state !== 'online' || seq <= (readUpTo.get(key) ?? 0n)) return;
  readUpTo.set(key, seq);
  client.markRead(target, seq, type);
  const c = conversations.find((x) => convKey(x.conversationType, x.targetId) === key);
  if (c) renderConversations();
}

function unreadOf(c: ConversationInfo): bigint {
  const read = readUpTo.get(convKey(c.conversationType, c.targetId)) ?? 0n;
  return c.lastMessage && c.lastMessage.seq <= read ? 0n : c.unread;
}

function renderConversations(): void {
  const ul = $('conversations');
  const open = openConversation();
  const lis = conversations.map((c) => {
    const key = convKey(c.conversationType, c.targetId);
    const group = c.conversationType === ConversationType.Group;
    const li = document.createElement('li');
    li.dataset.target = group ? `#${c.targetId}` : c.targetId;
    if (key === open) li.classList.add('open');
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = group ? `#${c.targetId}` : c.targetId;
    li.appendChild(name);
    if (c.isMute) {
      const m = document.createElement('span');
      m.className = 'muted';
      m.textContent = 'muted';
      li.appendChild(m);
    }
    const unread = unreadOf(c);
    if (unread > 0n) {
      const badge = document.createElement('span');
      badge.className = 'unread';
      badge.textContent = unread.toString();
      li.appendChild(badge);
    }
    const preview = document.createElement('span');
    preview.className = 'preview';
    const last = c.lastMessage;
    preview.textContent = !last ? '' : last.recalled ? 'message recalled' : group ? `${last.senderId}: ${last.preview}` : last.preview;
    li.appendChild(preview);
    li.onclick = () => {
      ($('peer') as HTMLInputElement).value = li.dataset.target!;
      if (last) readConversation(c.conversationType, c.targetId, last.seq);
      renderConversations();
    };
    return li;
  });
  if (!lis.length) {
    const li = document.createElement('li');
    li.className = 'empty';
    li.textContent = 'none yet';
    lis.push(li);
  }
  ul.replaceChildren(...lis);
}

/** Fetches the list again (coalesced: at most one request in flight, then one more). */
function refreshConversations(): void {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    void loadConversations();
  }, 50);
}

async function loadConversations(): Promise<void> {
  if (!client || client.state !== 'online') return;
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  try {
    conversations = (await client.getConversations({ limit: 100 })).conversations;
    // The open conversation is read at once (messages that arrived while syncing, say).
    const open = openConversation();
    const c = conversations.find((x) => convKey(x.conversationType, x.targetId) === open);
    if (c?.lastMessage && unreadOf(c) > 0n) readConversation(c.conversationType, c.targetId, c.lastMessage.seq);
    renderConversations();
  } catch (e) {
    showError(e);
  } finally {
    refreshing = false;
    if (refreshAgain) {
      refreshAgain = false;
      refreshConversations();
    }
  }
}

function onMessage(m: TimelineEntry): void {
  const group = m.conversationType === ConversationType.Group;
  if (!group && m.conversationType !== ConversationType.Single) return;
  const text = m.elems.map((e) => e.text ?? `[${e.url ?? 'attachment'}]`).join(' ');
  render({ key: m.messageKey, group, fromId: m.fromId, toId: m.toId, text, seq: m.seq, recalled: m.recalled });
  refreshConversations();
  if (m.fromId === client!.userId) return;
  // The peer (1:1) or the group; its read receipt goes up to this entry's seq in that timeline.
  const target = group ? m.toId : m.fromId;
  // A live message with no conversation open opens its own (not one pulled while catching
  // up: that would read whatever came last while the user was away).
  const peer = $('peer') as HTMLInputElement;
  if (!peer.value && client!.state === 'online') peer.value = group ? `#${m.toId}` : m.fromId;
  if (openConversation() === convKey(m.conversationType, target)) readConversation(m.conversationType, target, m.seq);
}

function markRecalled(key: bigint): void {
  const li = items.get(key.toString());
  if (!li) return;
  li.classList.add('recalled');
  li.querySelector('.text')!.textContent = 'message recalled';
  li.querySelector('button.recall')?.remove();
}

async function signIn(userId: string): Promise<void> {
  $('error').textContent = '';
  let session = await fetchSession(userId);
  if (!session) {
    $('manual').classList.add('shown');
    const sign = ($('sign') as HTMLInputElement).value.trim();
    if (!sign) throw new Error('this server has no development app: enter app id, signature and WebSocket URL');
    session = {
      appId: Number(($('app-id') as HTMLInputElement).value),
      userId,
      userSign: sign,
      wsUrls: [($('ws-url') as HTMLInputElement).value.trim()],
    };
  }
  const first = session;
  let useFirst = true;
  client = new TernClient({
    url: session.wsUrls[0],
    appId: session.appId,
    userId,
    deviceId: deviceId(userId),
    // Pull the whole retained timeline: the page shows the conversation, not just news.
    syncPoint: 0n,
    groups: Object.fromEntries((session.groups ?? []).map((g) => [g, 0n])),
    // A fresh signature at every login (the first one is already at hand).
    userSign: async () => {
      if (useFirst) {
        useFirst = false;
        return first.userSign;
      }
      return (await fetchSession(userId))?.userSign ?? first.userSign;
    },
  });
  client.on('state', (s) => {
    $('status').textContent = s;
    $('status').className = s;
    if (s === 'online') refreshConversations();
  });
  // Another device read, or pin / mute / delete over HTTP: fetch the list again.
  client.on('conversations', refreshConversations);
  client.on('message', onMessage);
  client.on('recall', (r) => {
    markRecalled(r.messageKey);
    refreshConversations();
  });
  // Joined a group (or one changed): ask again which groups this user is in.
  client.on('groupsChanged', () => {
    fetchSession(userId)
      .then((s) => s?.groups?.forEach((g) => client!.addGroup(g)))
      .catch(showError);
  });
  client.on('error', showError);
  $('me').textContent = `signed in as ${userId}`;
  $('login-box').hidden = true;
  $('chat').hidden = false;
  sessionStorage.setItem('tern-demo-user', userId);
  await client.connect();
}

$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  signIn(($('user') as HTMLInputElement).value.trim()).catch(showError);
});

// Typing another peer opens that conversation.
$('peer').addEventListener('change', () => {
  renderConversations();
  refreshConversations();
});

$('compose').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const to = ($('peer') as HTMLInputElement).value.trim();
  const input = $('text') as HTMLInputElement;
  const text = input.value;
  if (!client || !to || !text) return;
  input.value = '';
  // "#team" is the group "team"; anything else a user.
  const group = to.startsWith('#');
  const peer = group ? to.slice(1) : to;
  const sending = group ? client.sendGroupText(peer, text) : client.sendText(peer, text);
  sending
    .then((sent) => {
      render({ key: sent.messageKey, group, fromId: client!.userId, toId: peer, text, seq: sent.seq, recalled: false });
      refreshConversations();
    })
    .catch(showError);
});

const remembered = sessionStorage.getItem('tern-demo-user');
if (remembered) signIn(remembered).catch(showError);
