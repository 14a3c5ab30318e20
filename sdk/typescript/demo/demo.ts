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
 */
import { ConversationType, TernClient, TernError, TimelineEntry } from '../src/index.js';

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

function onMessage(m: TimelineEntry): void {
  const group = m.conversationType === ConversationType.Group;
  if (!group && m.conversationType !== ConversationType.Single) return;
  const text = m.elems.map((e) => e.text ?? `[${e.url ?? 'attachment'}]`).join(' ');
  render({ key: m.messageKey, group, fromId: m.fromId, toId: m.toId, text, seq: m.seq, recalled: m.recalled });
  if (m.fromId === client!.userId) return;
  // Read receipts: the peer (1:1) or the group, up to this entry's seq in that timeline.
  const readOf = group ? m.toId : m.fromId;
  if (client!.state === 'online') client!.markRead(readOf, m.seq, m.conversationType);
  if (!($('peer') as HTMLInputElement).value) ($('peer') as HTMLInputElement).value = group ? `#${m.toId}` : m.fromId;
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
  });
  client.on('message', onMessage);
  client.on('recall', (r) => markRecalled(r.messageKey));
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
    .then((sent) =>
      render({ key: sent.messageKey, group, fromId: client!.userId, toId: peer, text, seq: sent.seq, recalled: false }),
    )
    .catch(showError);
});

const remembered = sessionStorage.getItem('tern-demo-user');
if (remembered) signIn(remembered).catch(showError);
