/**
 * Test support: starts a real `tern` (target/debug/tern, or $TERN_BIN) on free loopback
 * ports in a temp data dir with the development app, mints signatures exactly as
 * PROTOCOL.md §3 specifies, and calls the HTTP management API as an admin.
 */
import { spawn, ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import WebSocket from 'ws';

import { TernClient, TernClientOptions, WebSocketConstructor } from '../src/index.js';

/** The repository root (this file runs as sdk/typescript/dist/test/server.js). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');
export const DEV_APP_ID = 10000;

export interface TernServer {
  http: string;
  ws: string;
  dataDir: string;
  secret: string;
  /** A login signature (PROTOCOL.md §3) valid for `ttlSecs`. */
  sign(userId: string, ttlSecs?: number): string;
  /** POST /v1/<path> as the app's admin; returns `data`, throws on a non-200 code. */
  api(path: string, body: unknown): Promise<any>;
  importUsers(ids: string[]): Promise<void>;
  /** A client for `userId` (not connected yet). */
  client(userId: string, extra?: Partial<TernClientOptions>): TernClient;
  stop(): Promise<void>;
}

function b64url(b: Buffer): string {
  return b.toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** PROTOCOL.md §3: version byte, expiry (u64 BE), HMAC-SHA256 over the purpose text. */
export function mintSignature(secret: string, appId: number, id: string, expiry: number, admin = false): string {
  const msg = `${admin ? 'tern-admin-sig-v1' : 'tern-sig-v1'}\n${appId}\n${id}\n${expiry}`;
  const mac = createHmac('sha256', Buffer.from(secret, 'utf8')).update(msg).digest();
  const head = Buffer.alloc(9);
  head[0] = admin ? 0x02 : 0x01;
  head.writeBigUInt64BE(BigInt(expiry), 1);
  return b64url(Buffer.concat([head, mac]));
}

export async function startTern(env: Record<string, string> = {}): Promise<TernServer> {
  const bin = process.env.TERN_BIN ?? join(REPO_ROOT, 'target/debug/tern');
  const dataDir = mkdtempSync(join(tmpdir(), 'tern-sdk-test-'));
  const args = ['all', '--data-dir', dataDir, '--http-addr', '127.0.0.1:0', '--tcp-addr', '127.0.0.1:0'];
  args.push('--ws-addr', '127.0.0.1:0', '--link-addr', '127.0.0.1:0');
  const child: ChildProcess = spawn(bin, args, {
    env: { ...process.env, TERN_LOG: 'warn', TERN_GATEWAY__CORES: '2', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const first = await new Promise<string>((resolveLine, reject) => {
    const timer = setTimeout(() => reject(new Error('tern did not print its listen line within 60 s')), 60_000);
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', (line) => {
      clearTimeout(timer);
      resolveLine(line);
    });
    // Keep draining so the child never blocks on a full pipe.
    rl.on('line', () => {});
    child.once('exit', (code) => reject(new Error(`tern exited with ${code} before listening`)));
  });
  const field = (k: string) => {
    const m = first.match(new RegExp(`${k}=(\\S+)`));
    if (!m) throw new Error(`no ${k}= in ${first}`);
    return m[1];
  };
  const http = `http://${field('http')}`;
  const ws = `ws://${field('ws')}/`;
  const toml = readFileSync(join(dataDir, 'dev-app.toml'), 'utf8');
  const secret = toml.match(/^secret = "(.*)"$/m)![1];
  const now = () => Math.floor(Date.now() / 1000);
  const adminSign = mintSignature(secret, DEV_APP_ID, 'admin', now() + 24 * 3600, true);

  const server: TernServer = {
    http,
    ws,
    dataDir,
    secret,
    sign: (userId, ttlSecs = 3600) => mintSignature(secret, DEV_APP_ID, userId, now() + ttlSecs),
    async api(path, body) {
      const url = `${http}/v1/${path}?appId=${DEV_APP_ID}&identifier=admin&userSign=${adminSign}`;
      const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const env = (await res.json()) as { code: number; msg: string; data: unknown };
      if (env.code !== 200) throw new Error(`${path}: ${env.code} ${env.msg}`);
      return env.data;
    },
    async importUsers(ids) {
      const data = await server.api('user/importUser', { userData: ids.map((userId) => ({ userId, nickName: userId })) });
      if (data.errorId.length) throw new Error(`importUser refused ${JSON.stringify(data.errorId)}`);
    },
    client(userId, extra = {}) {
      return new TernClient({
        url: ws,
        appId: DEV_APP_ID,
        userId,
        userSign: () => server.sign(userId),
        deviceId: `${userId}-device`,
        WebSocket: WebSocket as unknown as WebSocketConstructor,
        reconnectMinDelayMs: 50,
        reconnectMaxDelayMs: 1000,
        ...extra,
      });
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}

/** Resolves when `pred()` holds, polling; rejects after `ms` with `what`. */
export async function waitFor(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
