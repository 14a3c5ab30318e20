/**
 * The /demo chat page in a real headless Chromium (Debian's `chromium`, driven by
 * playwright-core; no browser is downloaded): two tabs sign in as alice and bob, chat,
 * one reloads and catches up, a recall shows on both; a group conversation with a member
 * added while online; the conversation list's unread count appearing, updating live and
 * cleared by opening the conversation. Screenshots go to
 * target/demo-screenshots/. Also: `[demo] enabled = false` removes the page.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, it } from 'node:test';

import { chromium, Browser, Page } from 'playwright-core';

import { REPO_ROOT, startTern, TernServer } from '../test/server.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SHOTS = join(REPO_ROOT, 'target/demo-screenshots');

let tern: TernServer;
let browser: Browser;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);
  mkdirSync(SHOTS, { recursive: true });
  tern = await startTern();
  // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
});

after(async () => {
  await browser?.close();
  await tern?.stop();
});

async function signIn(page: Page, user: string): Promise<void> {
  await page.goto(`${tern.http}/demo`);
  await page.fill('#user', user);
  await page.click('#login');
  await page.waitForSelector('#status.online');
}

async function send(page: Page, text: string, to?: string): Promise<void> {
  if (to) await page.fill('#peer', to);
  await page.fill('#text', text);
  await page.click('#send');
}

const bubble = (text: string) => `#messages li:has-text("${text}")`;

it('two tabs chat, one reloads and catches up, a recall shows on both', async () => {
  const context = await browser.newContext({ viewport: { width: 760, height: 560 } });
  const alice = await context.newPage();
  const bob = await context.newPage();
  const pageErrors: string[] = [];
  for (const p of [alice, bob]) p.on('pageerror', (e) => pageErrors.push(e.message));

  await signIn(alice, 'alice');
  await signIn(bob, 'bob');

  await send(alice, 'Hello Bob, this is Alice', 'bob');
  await bob.waitForSelector(`${bubble('Hello Bob, this is Alice')}.theirs`);
  await alice.waitForSelector(`${bubble('Hello Bob, this is Alice')}.mine`);
  // The page fills in who wrote last as the peer.
  assert.equal(await bob.inputValue('#peer'), 'alice');
  await send(bob, 'Hi Alice! Bob here.');
  await alice.waitForSelector(`${bubble('Hi Alice! Bob here.')}.theirs`);
  await alice.screenshot({ path: join(SHOTS, '1-alice-chatting.png') });

  // Bob reloads; Alice writes while his page is gone; he catches up by pull.
  await bob.close();
  await send(alice, 'Sent while Bob was reloading');
  const bob2 = await context.newPage();
  bob2.on('pageerror', (e) => pageErrors.push(e.message));
  await signIn(bob2, 'bob');
  await bob2.waitForSelector(bubble('Sent while Bob was reloading'));
  const texts = await bob2.$$eval('#messages li .text', (els) => els.map((e) => e.textContent));
  assert.deepEqual(texts, ['Hello Bob, this is Alice', 'Hi Alice! Bob here.', 'Sent while Bob was reloading']);
  // A real reload of the same tab signs in again by itself (the tab remembers the user).
  await bob2.reload();
  await bob2.waitForSelector('#status.online');
  await bob2.waitForSelector(bubble('Sent while Bob was reloading'));
  assert.equal(await bob2.locator('#messages li').count(), 3, 'no duplicates after a reload');
  await bob2.screenshot({ path: join(SHOTS, '2-bob-after-reload.png') });

  // Alice recalls her first message: both pages show it recalled.
  await alice.click(`${bubble('Hello Bob, this is Alice')} button.recall`);
  await alice.waitForSelector('#messages li.recalled');
  await bob2.waitForSelector('#messages li.recalled');
  assert.equal(await bob2.textContent('#messages li.recalled .text'), 'message recalled');
  assert.equal(await bob2.locator('#messages li').count(), 3);
  await alice.screenshot({ path: join(SHOTS, '3-alice-after-recall.png') });
  await bob2.screenshot({ path: join(SHOTS, '4-bob-after-recall.png') });

  assert.equal(await alice.textContent('#error'), '');
  assert.deepEqual(pageErrors, []);
  await context.close();
});

it('group chat: members see the message, a member added later catches up, a group recall shows', async () => {
  await tern.importUsers(['gina', 'hank', 'ivy']);
  await tern.api('group/createGroup', {
    groupId: 'team',
    groupType: 3,
    ownerId: 'gina',
    memberList: [{ memberId: 'hank' }],
  });
  const context = await browser.newContext({ viewport: { width: 760, height: 480 } });
  const gina = await context.newPage();
  const hank = await context.newPage();
  await signIn(gina, 'gina');
  await signIn(hank, 'hank');
  await send(gina, 'Morning, team', '#team');
  await hank.waitForSelector(`${bubble('Morning, team')}.theirs`);
  assert.equal(await hank.textContent(`${bubble('Morning, team')} .meta`), 'in #team from gina');
  // The page answers in the group it last heard from.
  assert.equal(await hank.inputValue('#peer'), '#team');
  await send(hank, 'Morning!');
  await gina.waitForSelector(`${bubble('Morning!')}.theirs`);

  // ivy is added while signed in: the page learns the group (GroupList notify) and pulls it.
  const ivy = await context.newPage();
  await signIn(ivy, 'ivy');
  await tern.api('group/addMember', { groupId: 'team', members: [{ memberId: 'ivy' }] });
  await send(gina, 'Welcome, Ivy');
  await ivy.waitForSelector(bubble('Welcome, Ivy'));

  await gina.click(`${bubble('Morning, team')} button.recall`);
  await hank.waitForSelector('#messages li.recalled');
  await gina.waitForSelector('#messages li.recalled');
  await hank.screenshot({ path: join(SHOTS, '5-hank-group.png') });
  await context.close();
});

it('the conversation list shows unread counts live, and opening a conversation clears them', async () => {
  await tern.importUsers(['kim', 'lee', 'max']);
  const context = await browser.newContext({ viewport: { width: 900, height: 520 } });
  const kim = await context.newPage();
  const lee = await context.newPage();
  const max = await context.newPage();
  const pageErrors: string[] = [];
  for (const p of [kim, lee, max]) p.on('pageerror', (e) => pageErrors.push(e.message));
  await signIn(kim, 'kim');
  await signIn(lee, 'lee');
  await signIn(max, 'max');
  const conv = (target: string) => `#conversations li[data-target="${target}"]`;

  // kim chats with lee: that conversation is open on both sides, so nothing is unread.
  await send(kim, 'Hi Lee', 'lee');
  await lee.waitForSelector(`${bubble('Hi Lee')}.theirs`);
  await lee.waitForSelector(`${conv('kim')} .preview:has-text("Hi Lee")`);
  assert.equal(await lee.locator(`${conv('kim')} .unread`).count(), 0, 'the open conversation is read at once');

  // max writes to kim, whose open conversation is lee's: an unread count appears and goes up.
  await send(max, 'Kim, got a minute?', 'kim');
  await kim.waitForSelector(`${conv('max')} .unread:has-text("1")`);
  await send(max, 'It is about the release');
  await kim.waitForSelector(`${conv('max')} .unread:has-text("2")`);
  assert.equal(await kim.textContent(`${conv('max')} .preview`), 'It is about the release');
  assert.equal(await kim.locator(`${conv('lee')} .unread`).count(), 0);
  // The newest activity first.
  const order = await kim.$$eval('#conversations li', (els) => els.map((e) => (e as HTMLElement).dataset.target));
  assert.deepEqual(order, ['max', 'lee']);
  await kim.screenshot({ path: join(SHOTS, '6-kim-unread.png') });

  // A second tab of kim sees the same count; kim opens the conversation in the first tab:
  // the count clears there, and the second tab is told (SyncNotify of kind Conversation).
  const kim2 = await (await browser.newContext({ viewport: { width: 900, height: 520 } })).newPage();
  kim2.on('pageerror', (e) => pageErrors.push(e.message));
  await signIn(kim2, 'kim');
  await kim2.waitForSelector(`${conv('max')} .unread:has-text("2")`);
  await kim.click(conv('max'));
  assert.equal(await kim.inputValue('#peer'), 'max');
  await kim.waitForSelector(`${conv('max')}.open`);
  await kim.waitForSelector(`${conv('max')} .unread`, { state: 'detached' });
  await kim2.waitForSelector(`${conv('max')} .unread`, { state: 'detached' });
  await kim.screenshot({ path: join(SHOTS, '7-kim-read.png') });

  // The conversation now open, max's next message is read as it arrives.
  await send(max, 'Thanks!');
  await kim.waitForSelector(`${conv('max')} .preview:has-text("Thanks!")`);
  assert.equal(await kim.locator(`${conv('max')} .unread`).count(), 0);
  // Muted over HTTP by the business server: the page hears of it (conversation notify).
  await tern.api('conversation/update', { fromId: 'kim', conversationId: '1_kim_lee', isMute: true });
  await kim.waitForSelector(`${conv('lee')} .muted`);
  await kim2.waitForSelector(`${conv('lee')} .muted`);
  // And after a reload, the server's count agrees: nothing unread.
  await kim.reload();
  await kim.waitForSelector('#status.online');
  await kim.waitForSelector(`${conv('max')} .preview:has-text("Thanks!")`);
  assert.equal(await kim.locator('#conversations .unread').count(), 0);

  assert.equal(await kim.textContent('#error'), '');
  assert.deepEqual(pageErrors, []);
  await kim2.context().close();
  await context.close();
});

it('the page is not served when [demo] enabled = false', async () => {
  const off = await startTern({ TERN_DEMO__ENABLED: 'false' });
  try {
    for (const path of ['/demo', '/demo/demo.js']) {
      const res = await fetch(`${off.http}${path}`);
      assert.equal(res.status, 404, path);
      assert.equal(((await res.json()) as { code: number }).code, 90004);
    }
    const res = await fetch(`${off.http}/demo/session`, { method: 'POST', body: '{"userId":"alice"}' });
    assert.equal(((await res.json()) as { code: number }).code, 90004);
  } finally {
    await off.stop();
  }
  // On (the default): the page and the development app's session endpoint answer.
  const page = await fetch(`${tern.http}/demo`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /Tern web chat/);
  const session = await fetch(`${tern.http}/demo/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId: 'carol' }),
  });
  const body = (await session.json()) as { code: number; data: { userSign: string; wsUrls: string[] } };
  assert.equal(body.code, 200);
  assert.equal(body.data.userSign.length, 55);
  assert.deepEqual(body.data.wsUrls, [tern.ws]);
});
