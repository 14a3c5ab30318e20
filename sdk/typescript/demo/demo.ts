/**
 * The web chat page served by `tern` at /demo (logic/src/http/demo/index.html), built on
 * the SDK. Bundled by `npm run build:demo` into logic/src/http/demo/demo.js, which is
 * committed and embedded in the binary; `scripts/sdk-test` rebuilds it and fails on drift.
 *
 * Sign-in asks the server's development-only `/demo/session` for a signature (or takes one
 * typed in when the server has configured apps), then the page shows the user's 1:1
 * timeline from the beginning of retention (it pulls from seq 0), live pushes, and lets
 * the user recall their own messages. The tab remembers who signed in (sessionStorage),
 * so a reload signs in again and catches up by pull.
 */
import { ConversationType, TernClient, TernError, TimelineEntry } from '../src/index.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

interface Session {
  appId: number;
  userId: string;
  userSign: string;
  wsUrls: string[];
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

function render(m: { key: bigint; fromId: string; toId: string; text: string; seq: bigint; recalled: boolean }): void {
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
  meta.textContent = m.fromId === me ? `to ${m.toId}` : `from ${m.fromId}`;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = m.recalled ? 'message recalled' : m.text;
  bubble.append(meta, body);
  if (m.fromId === me && !m.recalled) {
    const b = document.createElement('button');
    b.className = 'recall';
    b.textContent = 'Recall';
    b.onclick = () => client!.recall(m.key, m.toId).catch(showError);
    bubble.appendChild(b);
  }
  if (m.recalled) li.classList.add('recalled');
  li.replaceChildren(bubble);
  $('messages').scrollTop = $('messages').scrollHeight;
}

function onMessage(m: TimelineEntry): void {
  if (m.conversationType !== ConversationType.Single) return;
  const text = m.elems.map((e) => e.text ?? `[${e.url ?? 'attachment'}]`).join(' ');
  render({ key: m.messageKey, fromId: m.fromId, toId: m.toId, text, seq: m.seq, recalled: m.recalled });
  if (m.fromId !== client!.userId && client!.state === 'online') client!.markRead(m.fromId, m.seq);
  if (m.fromId !== client!.userId && !($('peer') as HTMLInputElement).value) {
    ($('peer') as HTMLInputElement).value = m.fromId;
  }
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
  const peer = ($('peer') as HTMLInputElement).value.trim();
  const input = $('text') as HTMLInputElement;
  const text = input.value;
  if (!client || !peer || !text) return;
  input.value = '';
  client
    .sendText(peer, text)
    .then((sent) => render({ key: sent.messageKey, fromId: client!.userId, toId: peer, text, seq: sent.seq, recalled: false }))
    .catch(showError);
});

const remembered = sessionStorage.getItem('tern-demo-user');
if (remembered) signIn(remembered).catch(showError);
