// A simulated cloud serving every kind of broken or hostile answer to a running bridge with a
// real mosquitto: each is refused with a clear message, the thermostats already known (or the
// good records beside the bad) keep being served, and the bridge never stops.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { CloudClient, CloudError } from '../src/cloud.js';
import { simDevice, type SimFault } from '../src/simcloud.js';
import { Recorder, startRig, type Rig } from './helpers.js';

const BASE = 'hmarex2mqtt';
const HTML = '<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>';

describe('hostile cloud: answers refused whole', { timeout: 60_000 }, () => {
  let rig: Rig;
  let sub: Recorder;
  /** A server on another port: a `next` link pointing here must never be followed. */
  let trap: Server;
  let trapHits = 0;
  let trapUrl = '';

  before(async () => {
    trap = createServer((_req, res) => {
      trapHits += 1;
      res.end('{}');
    });
    await new Promise<void>((resolve) => trap.listen(0, '127.0.0.1', resolve));
    trapUrl = `http://127.0.0.1:${(trap.address() as AddressInfo).port}`;
    rig = await startRig({
      env: {
        TOTP_PERIOD: '2',
        HMAREX_TIMEOUT_MS: '1000',
        // No retries nor schedule of their own: each case below drives one refresh.
        HMAREX_RETRY_MIN_MS: '600000',
        HMAREX_RETRY_MAX_MS: '600000',
        HMAREX_REFRESH: '0 0 1 1 *',
      },
    });
    sub = await Recorder.connect(rig.broker.url, ['#']);
    await sub.waitFor((m) => m.topic === `${BASE}/bridge/info` && JSON.parse(m.payload).device_count === 3, 'three thermostats');
  });
  after(async () => {
    await sub.close();
    await rig.dispose();
    await new Promise<void>((resolve) => trap.close(() => resolve()));
  });

  /** One refresh against a broken answer: it fails with `message`, the known thermostats stay. */
  async function refused(setup: () => void, message: RegExp): Promise<string> {
    const known = rig.bridge.deviceRecords.map((d) => d.sn);
    const logFrom = rig.log.lines.length;
    setup();
    try {
      await rig.bridge.refresh('request');
    } finally {
      rig.cloud.fault = { kind: 'none' };
      rig.cloud.loginFault = { kind: 'none' };
      rig.cloud.pageHook = null;
    }
    const info = rig.bridge.info;
    assert.equal(info.cloud, 'offline');
    assert.match(info.last_error ?? '', message);
    assert.deepEqual(rig.bridge.deviceRecords.map((d) => d.sn), known, 'the thermostats already known are kept');
    const logged = rig.log.lines.slice(logFrom).map((l) => String(JSON.parse(l).msg)).find((msg) => msg.startsWith('cloud refresh failed: '));
    assert.ok(logged?.includes(info.last_error ?? '-'), `the failure is logged in the same words: ${logged}`);
    return info.last_error ?? '';
  }

  const html = (fault: Partial<Extract<SimFault, { kind: 'body' }>> = {}): SimFault => ({ kind: 'body', body: HTML, contentType: 'text/html; charset=utf-8', ...fault });

  it('an HTML page instead of JSON', async () => {
    await refused(() => (rig.cloud.fault = html()), /^device list page 1: the answer is not JSON \(text\/html\)$/);
    await refused(() => (rig.cloud.fault = { kind: 'status', status: 502, body: HTML, contentType: 'text/html' }), /^device list page 1: HTTP 502 from the cloud$/);
  });

  it('a body that is JSON but no envelope, or "results" that is not a list', async () => {
    await refused(() => (rig.cloud.pageHook = () => 'just a string'), /device list: the body is not a JSON object \(page 1\)/);
    await refused(() => (rig.cloud.pageHook = (page) => ({ ...page, results: { 0: page.results } })), /"results" is not a list \(page 1\)/);
    await refused(() => (rig.cloud.pageHook = (page) => ({ count: page.count })), /"results" is not a list/);
    await refused(() => (rig.cloud.pageHook = (page) => ({ ...page, next: 42 })), /"next" is not a string/);
  });

  it('a "next" link to another host is refused: the token goes nowhere else', async () => {
    const port = new URL(rig.cloud.url).port;
    for (const next of [`${trapUrl}/api/device/?page=2`, `http://localhost:${port}/api/device/?page=2`, `https://127.0.0.1:${port}/api/device/?page=2`]) {
      await refused(() => (rig.cloud.pageHook = (page) => ({ ...page, next })), /"next" points to another host \(.+\); refused to send the token there/);
    }
    assert.equal(trapHits, 0, 'nothing was sent to the other host');
  });

  it('a redirect is not followed: the password goes to the configured host only', async () => {
    const redirector = createServer((_req, res) => res.writeHead(302, { location: `${trapUrl}/api/login/` }).end());
    await new Promise<void>((resolve) => redirector.listen(0, '127.0.0.1', resolve));
    const cloud = new CloudClient({ baseUrl: `http://127.0.0.1:${(redirector.address() as AddressInfo).port}/api/`, email: 'a@b.c', password: 'pw', timeoutMs: 1000 });
    try {
      await assert.rejects(cloud.listDevices(), (error: Error) => error instanceof CloudError && error.message === 'login: HTTP 302');
      assert.equal(trapHits, 0, 'nothing was sent to the redirect target');
    } finally {
      await cloud.close();
      await new Promise<void>((resolve) => redirector.close(() => resolve()));
    }
  });

  it('endless pagination stops at the page cap', async () => {
    const before = rig.cloud.counters.deviceRequests;
    const port = new URL(rig.cloud.url).port;
    await refused(
      () => (rig.cloud.pageHook = (page, n) => ({ ...page, next: `http://127.0.0.1:${port}/api/device/?page=${n + 1}` })),
      /device list: more than 1000 pages, stopped following "next"/,
    );
    assert.equal(rig.cloud.counters.deviceRequests - before, 1000);
  });

  it('a body over the size cap', async () => {
    const padding = 'x'.repeat(9 * 1024 * 1024);
    await refused(() => (rig.cloud.pageHook = (page) => ({ ...page, padding })), /^device: the answer is larger than 8388608 bytes$/);
  });

  it('a server that trickles bytes hits the overall time limit', async () => {
    const started = Date.now();
    await refused(() => (rig.cloud.fault = { kind: 'trickle', intervalMs: 50 }), /no complete answer within the time limit \(hmarex\.timeout_ms\)/);
    const took = Date.now() - started;
    assert.ok(took >= 900 && took < 3000, `gave up after ${took} ms, the limit being 1000 ms`);
  });

  it('a connection closed without an answer', async () => {
    await refused(() => (rig.cloud.fault = { kind: 'close' }), /connection closed by the server/);
  });

  it('a login answer without a token, or not JSON', async () => {
    await refused(() => {
      rig.cloud.revokeTokens();
      rig.cloud.loginFault = { kind: 'body', body: JSON.stringify({ user_name: 'x', access_token: 42 }) };
    }, /^login: the answer has no access_token$/);
    await refused(() => (rig.cloud.loginFault = html()), /^login: the answer is not JSON \(text\/html\)$/);
  });

  it('a record nested 100,000 levels deep is skipped, the others are served', async () => {
    await rig.bridge.refresh('request'); // logged in again: the fault below is for the device list
    const known = rig.bridge.deviceRecords.map((d) => d.meta);
    const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
    const record = `{"id":27,"sn":"DEEP27","totp_key":"AAAAAAAAAAAAAAAA","data":{"x":${deep}}}`;
    rig.cloud.fault = { kind: 'body', body: `{"count":4,"next":null,"results":[${known.map((m) => JSON.stringify(m).replace(/}$/, ',"totp_key":"KEYKEYKEYKEYKEYK"}')).join(',')},${record}]}` };
    const logFrom = rig.log.lines.length;
    try {
      await rig.bridge.refresh('request');
    } finally {
      rig.cloud.fault = { kind: 'none' };
    }
    assert.equal(rig.bridge.info.cloud, 'online', String(rig.bridge.info.last_error));
    assert.deepEqual(rig.bridge.deviceRecords.map((d) => d.sn), known.map((m) => m.sn));
    const warnings = rig.log.lines.slice(logFrom).map((l) => String(JSON.parse(l).msg));
    assert.ok(warnings.some((w) => /id 27, sn "DEEP27" skipped: nested more than 32 levels deep/.test(w)), warnings.join('\n'));
  });

  it('through all of it, the codes went on and the bridge recovers at the next good answer', async () => {
    const from = sub.messages.length;
    for (const sn of rig.bridge.deviceRecords.map((d) => d.sn)) {
      const code = await sub.waitFor((m) => m.topic === `${BASE}/${sn}/totp` && m.payload !== '', `a new code for ${sn}`, 5000, from);
      assert.match(JSON.parse(code.payload).auth, /^\d{9}$/);
    }
    await rig.bridge.refresh('request');
    assert.equal(rig.bridge.info.cloud, 'online');
    assert.equal(rig.bridge.info.last_error, null);
    const info = await sub.waitFor((m) => m.topic === `${BASE}/bridge/info` && JSON.parse(m.payload).cloud === 'online', 'online again', 5000, from);
    assert.equal(JSON.parse(info.payload).device_count, 3);
  });
});

describe('hostile cloud: bad records beside good ones', { timeout: 30_000 }, () => {
  const good = [simDevice(1), simDevice(2), simDevice(3)];
  const weird = [
    // Accepted: wrong types and missing fields where they do not matter.
    { id: { nested: true }, sn: 'WEIRD1', name: 12345, totp_key: 'WEIRDKEYWEIRDKY1', data: 'not an object', type: ['ax'] },
    { sn: 'WEIRD2', totp_key: 'WEIRDKEYWEIRDKY2' },
    { id: 30, sn: 'WEIRD3', name: 'x/+/#\u0000\u001b[31m 😀 ванная', totp_key: 'WEIRDKEYWEIRDKY3' },
  ];
  const badKey = 'КЛЮЧКЛЮЧКЛЮЧКЛЮ';
  const bad: Array<[unknown, RegExp]> = [
    ['not an object', /device record #\d+ is not an object/],
    [null, /is not an object/],
    [{ id: 10 }, /id 10.* skipped: no sn/],
    [{ id: 11, sn: { $gt: '' }, totp_key: 'AAAAAAAAAAAAAAAA' }, /id 11.* skipped: sn is neither text nor a number/],
    [{ id: 12, sn: 'ABCD12', totp_key: 1234567890 }, /id 12.* skipped: no usable totp_key \(not text\)/],
    [{ id: 13, sn: 'ABCD13', totp_key: '' }, /id 13.* skipped: no usable totp_key \(empty\)/],
    [{ id: 14, sn: 'ABCD14' }, /id 14.* skipped: no usable totp_key \(missing\)/],
    [{ id: 15, sn: 'ABCD15', totp_key: badKey }, /thermostat ABCD15 \(id 15\) skipped: totp_key holds characters other than printable ASCII/],
    [{ ...good[0], id: 16, totp_key: 'DUPLICATEKEYDUP1' }, new RegExp(`id 16 skipped: sn ${good[0].sn} is already used by id ${good[0].id}`)],
    [{ id: 17, sn: 'a/b', totp_key: 'AAAAAAAAAAAAAAAA' }, /id 17.* skipped: sn may only hold/],
    [{ id: 18, sn: 'x/+/#', totp_key: 'AAAAAAAAAAAAAAAA' }, /id 18.* skipped: sn may only hold/],
    [{ id: 19, sn: '#', totp_key: 'AAAAAAAAAAAAAAAA' }, /id 19.* skipped: sn may only hold/],
    [{ id: 20, sn: '+', totp_key: 'AAAAAAAAAAAAAAAA' }, /id 20.* skipped: sn may only hold/],
    [{ id: 21, sn: 'has space', totp_key: 'AAAAAAAAAAAAAAAA' }, /id 21.* skipped: sn may only hold/],
    [{ id: 22, sn: 'ванная', totp_key: 'AAAAAAAAAAAAAAAA' }, /id 22.* skipped: sn may only hold/],
    [{ id: 23, sn: 'ctl\u0000\n', totp_key: 'AAAAAAAAAAAAAAAA' }, /id 23.* skipped: sn may only hold/],
    [{ id: 24, sn: 'bridge', totp_key: 'AAAAAAAAAAAAAAAA' }, /id 24.* skipped: sn "bridge" would clash with the bridge's own topics/],
    [{ id: 25, sn: '../../x', totp_key: 'AAAAAAAAAAAAAAAA' }, /id 25.* skipped: sn may only hold/],
    [{ id: 26, sn: 'A'.repeat(65), totp_key: 'AAAAAAAAAAAAAAAA' }, /id 26.* skipped: sn may only hold/],
  ];
  let rig: Rig;
  let sub: Recorder;

  before(async () => {
    rig = await startRig({ cloud: { devices: good }, env: { HMAREX_REFRESH: '0 0 1 1 *' }, start: false });
    // Two pages, bad records around the good ones on both.
    const records = bad.map(([raw]) => raw);
    rig.cloud.pageHook = (page, n) =>
      n === 1
        ? { ...page, next: `${rig.cloud.url}device/?page=2`, results: [...records.slice(0, 8), ...(page.results as unknown[]), ...weird] }
        : { ...page, next: null, results: records.slice(8) };
    sub = await Recorder.connect(rig.broker.url, ['#']);
    await rig.bridge.start();
    await sub.waitFor((m) => m.topic === `${BASE}/bridge/info` && JSON.parse(m.payload).cloud === 'online', 'the refresh');
  });
  after(async () => {
    await sub.close();
    await rig.dispose();
  });

  it('serves every good record and each odd-but-usable one', async () => {
    const served = rig.bridge.deviceRecords.map((d) => d.sn).sort();
    assert.deepEqual(served, [...good.map((d) => d.sn), 'WEIRD1', 'WEIRD2', 'WEIRD3'].sort());
    for (const sn of served) await sub.waitFor((m) => m.topic === `${BASE}/${sn}/totp` && m.payload !== '', `a code for ${sn}`);
    const weird1 = rig.bridge.deviceRecords.find((d) => d.sn === 'WEIRD1');
    assert.equal(weird1?.name, 'WEIRD1', 'a name that is not text falls back to the sn');
    assert.equal(weird1?.id, null);
  });

  it('names each refused record in a warning, without quoting its key', () => {
    const warnings = rig.log.lines.filter((l) => JSON.parse(l).level === 40).map((l) => String(JSON.parse(l).msg));
    for (const [, message] of bad) assert.ok(warnings.some((w) => message.test(w)), `a warning matching ${message} in:\n${warnings.join('\n')}`);
    assert.equal(rig.log.text().includes(badKey), false, 'the unusable key is not quoted');
    assert.equal(rig.log.text().includes('DUPLICATEKEYDUP1'), false, 'the duplicate key is not quoted');
  });

  it('publishes nothing outside its own topics, and a hostile name only inside payloads', async () => {
    const served = new Set(rig.bridge.deviceRecords.map((d) => d.sn));
    const discovery = await sub.waitFor((m) => m.topic === 'homeassistant/device/hmarex2mqtt_WEIRD3/config', 'discovery of WEIRD3');
    assert.equal(JSON.parse(discovery.payload).device.name, weird[2].name);
    const list = await sub.waitFor((m) => m.topic === `${BASE}/bridge/devices` && JSON.parse(m.payload).length === served.size, 'the device list');
    for (const { topic } of sub.messages) {
      const own =
        /^hmarex2mqtt\/bridge\/(state|info|devices|readback)$/.test(topic) ||
        (/^hmarex2mqtt\/([^/]+)\/(info|totp)$/.test(topic) && served.has(topic.split('/')[1])) ||
        (/^homeassistant\/device\/hmarex2mqtt_([^/]+)\/config$/.test(topic) && (served.has(topic.split('/')[2].slice(12)) || topic.split('/')[2] === 'hmarex2mqtt_bridge'));
      assert.ok(own, `published outside the bridge's own topics: ${JSON.stringify(topic)}`);
    }
    assert.ok((JSON.parse(list.payload) as Array<Record<string, unknown>>).every((d) => !('totp_key' in d)));
  });
});
