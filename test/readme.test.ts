// The README and examples/ kept true: the settings table against the schema, the topics against
// the program's topic builder, the Home Assistant YAML against the discovery it publishes, and the
// Node-RED flow's function run on a real published code, its request checked by a fake thermostat.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import { describeSchema } from '../src/config.js';
import { parseDevicePage } from '../src/devices.js';
import { BRIDGE_OBJECT_ID, deviceDiscovery, deviceObjectId } from '../src/discovery.js';
import { simDevice } from '../src/simcloud.js';
import { buildTopics, totpPayload } from '../src/topics.js';
import { CodeGenerator, TERNEO_DEFAULTS, decodeKey } from '../src/totp.js';
import { ROOT, Recorder, referenceHotp, startRig, type Rig } from './helpers.js';

const README = readFileSync(join(ROOT, 'README.md'), 'utf8');

/** The text of a `## heading` section, up to the next `## `. */
function section(heading: string): string {
  const start = README.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `README has "## ${heading}"`);
  const end = README.indexOf('\n## ', start + 1);
  return README.slice(start, end < 0 ? undefined : end);
}

/** Rows of the first Markdown table in `text`, cells trimmed, header and rule dropped. */
function tableRows(text: string): string[][] {
  const lines = text.split('\n').filter((l) => l.startsWith('|'));
  return lines.slice(2).map((l) =>
    l
      .slice(1, -1)
      .split(/(?<!\\)\|/)
      .map((c) => c.trim()),
  );
}

function codeBlocks(text: string, lang: string): string[] {
  return [...text.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]);
}

const unquote = (cell: string) => cell.replace(/^`|`$/g, '');

describe('README', { timeout: 60_000 }, () => {
  it('quick start is two commands, the demo and the tests, that package.json runs', () => {
    const [block] = codeBlocks(section('Quick start'), 'sh');
    const commands = block.split('\n').filter((l) => l.trim() !== '').map((l) => l.replace(/\s+#.*$/, '').trim());
    assert.deepEqual(commands, ['npm ci && npm run demo', 'npm test']);
    const { scripts } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    assert.ok(scripts.demo && scripts.test);
  });

  it('the settings table has every key of the schema with its variable and default, and no other', () => {
    const rows = tableRows(section('Settings'));
    const schema = describeSchema();
    const expected = schema.map((r) => `${r.key} ${r.env} ${r.default === '' ? '' : String(r.default)}`);
    const actual = rows.map(([key, env, def]) => `${unquote(key)} ${unquote(env)} ${unquote(def)}`);
    // On failure the message is the list to copy: key, variable, default.
    assert.deepEqual(actual, expected);
  });

  it('the topics table names every topic the program builds', () => {
    const topics = buildTopics('<base>', '<discovery_prefix>', 'homeassistant/status');
    const named = tableRows(section('MQTT topics')).map(([topic]) => unquote(topic));
    const built = [
      topics.state,
      topics.info,
      topics.devices,
      topics.requestRefresh,
      topics.deviceInfo('<sn>'),
      topics.deviceTotp('<sn>'),
      topics.discovery(deviceObjectId('<sn>')),
      topics.discovery(BRIDGE_OBJECT_ID),
    ];
    assert.deepEqual(named, built);
  });

  it('the totp example has the fields and window of a real payload', () => {
    const [example] = codeBlocks(section('MQTT topics'), 'json');
    const shown = JSON.parse(example) as Record<string, unknown>;
    const generator = new CodeGenerator(decodeKey('BW4ERXAJXXXXXXXX', 'raw'), TERNEO_DEFAULTS);
    const real = totpPayload(String(shown.sn), generator.codeAt(Date.parse(String(shown.valid_from))), TERNEO_DEFAULTS);
    assert.deepEqual(Object.keys(shown), Object.keys(real));
    assert.deepEqual({ ...shown, auth: real.auth }, real);
  });

  it('says what it guarantees about secrets, how it fails and how fast it is', () => {
    for (const heading of ['## Security: what the bridge guarantees, what it leaves to you', '## When things fail', '## Performance']) assert.ok(README.includes(heading), heading);
  });
});

describe('README: Home Assistant example', { timeout: 60_000 }, () => {
  const blocks = codeBlocks(section('Examples'), 'yaml').map((b) => YAML.parse(b) as Record<string, unknown>);
  const config = blocks.find((b) => 'rest_command' in b) as {
    rest_command: Record<string, { url: string; method: string; content_type: string; payload: string }>;
    script: Record<string, { sequence: Array<Record<string, unknown>> }>;
    recorder: { exclude: { entity_globs: string[] } };
  };
  const [commandName, command] = Object.entries(config.rest_command)[0];
  const sequence = Object.values(config.script)[0].sequence;
  const call = sequence.find((step) => step.action === `rest_command.${commandName}`) as { data: { ip: string; sn: string; totp_sensor: string; setpoint: string } };

  it('posts JSON to the local API', () => {
    assert.equal(command.url, 'http://{{ ip }}/api.cgi');
    assert.equal(command.method, 'post');
    assert.equal(command.content_type, 'application/json');
    assert.ok(call, 'the script calls the rest_command');
    assert.deepEqual(Object.keys(call.data).sort(), ['ip', 'setpoint', 'sn', 'totp_sensor']);
  });

  it('uses the TOTP sensor that discovery creates for that thermostat, and its attributes', () => {
    const [record] = parseDevicePage([simDevice(1, { sn: call.data.sn })]).devices;
    const discovery = deviceDiscovery(record, { topics: buildTopics('hmarex2mqtt', 'homeassistant', 'homeassistant/status'), version: 'test', period: 30 });
    const totp = (discovery.components as Record<string, { default_entity_id: string; value_template: string; json_attributes_template: string }>).totp;
    assert.equal(call.data.totp_sensor, totp.default_entity_id);
    assert.equal(totp.value_template, '{{ value_json.auth }}', 'the state is the code');
    for (const attribute of ['time', 'valid_until']) assert.ok(totp.json_attributes_template.includes(`"${attribute}": value_json.${attribute}`), attribute);
    const wait = sequence.find((step) => 'wait_template' in step) as { wait_template: string };
    assert.ok(wait.wait_template.includes(`state_attr('${totp.default_entity_id}', 'valid_until')`));
  });

  it('renders to the request a thermostat wants', () => {
    // The Jinja expressions the payload uses, evaluated as Home Assistant would for this call.
    const values: Record<string, string> = {
      'sn': call.data.sn,
      "state_attr(totp_sensor, 'time')": '634929120',
      'states(totp_sensor)': '012345678',
      'setpoint | int': '23',
    };
    const rendered = command.payload.replace(/\{\{\s*(.*?)\s*\}\}/g, (_, expr: string) => {
      assert.ok(expr in values, `unexpected template expression ${expr}`);
      return values[expr];
    });
    assert.deepEqual(JSON.parse(rendered), { sn: call.data.sn, time: '634929120', auth: '012345678', par: [[31, 1, '23']] });
  });

  it('keeps the code sensor out of the recorder', () => {
    const [record] = parseDevicePage([simDevice(7)]).devices;
    const discovery = deviceDiscovery(record, { topics: buildTopics('hmarex2mqtt', 'homeassistant', 'homeassistant/status'), version: 'test', period: 30 });
    const entityId = (discovery.components as Record<string, { default_entity_id: string }>).totp.default_entity_id;
    const globs = config.recorder.exclude.entity_globs.map((g) => new RegExp(`^${g.replace(/[.]/g, '\\.').replace(/\*/g, '.*')}$`));
    assert.ok(globs.some((g) => g.test(entityId)), `${entityId} excluded`);
    assert.ok(globs.some((g) => g.test('sensor.living_room_totp_code')), 'the name older HA versions give it');
    for (const other of ['sensor.hmarex2mqtt_1100150010434b5836350000000007_temperature', 'sensor.living_room_setpoint']) {
      assert.ok(!globs.some((g) => g.test(other)), `${other} still recorded`);
    }
  });
});

interface FlowNode {
  id: string;
  type: string;
  topic?: string;
  datatype?: string;
  broker?: string;
  func?: string;
  method?: string;
  url?: string;
  payload?: string;
  payloadType?: string;
  wires?: string[][];
}

interface SignedRequest {
  url: string;
  method: string;
  headers: Record<string, string>;
  payload: { sn: string; time: string; auth: string; par: Array<[number, number, string]> };
}

describe('examples/node-red/setpoint-flow.json', { timeout: 60_000 }, () => {
  const flow = JSON.parse(readFileSync(join(ROOT, 'examples/node-red/setpoint-flow.json'), 'utf8')) as FlowNode[];
  const byType = (type: string) => flow.filter((n) => n.type === type);
  const one = (type: string) => {
    const nodes = byType(type);
    assert.equal(nodes.length, 1, `one ${type} node`);
    return nodes[0];
  };
  const mqttIn = one('mqtt in');
  const fn = one('function');
  const http = one('http request');
  const inject = one('inject');

  it('wires mqtt in and inject -> function -> http request, with a broker config node', () => {
    const broker = one('mqtt-broker');
    assert.equal(mqttIn.broker, broker.id);
    assert.deepEqual(mqttIn.wires, [[fn.id]]);
    assert.deepEqual(inject.wires, [[fn.id]]);
    assert.deepEqual(fn.wires, [[http.id]]);
    assert.equal(http.method, 'POST');
    assert.equal(http.url, '', 'the URL comes from msg.url');
    assert.equal(new Set(flow.map((n) => n.id)).size, flow.length, 'ids are unique');
  });

  it('subscribes to the contract topic of every thermostat, as JSON', () => {
    assert.equal(mqttIn.topic, buildTopics('hmarex2mqtt', 'homeassistant', 'homeassistant/status').deviceTotp('+'));
    assert.equal(mqttIn.datatype, 'json');
  });

  describe('the function, on a code the bridge publishes', () => {
    let rig: Rig;
    let thermostat: Server;
    let thermostatUrl: string;
    const received: Array<Record<string, unknown>> = [];

    before(async () => {
      rig = await startRig();
      // A thermostat's local API: accepts a request whose auth is the code of its own time.
      thermostat = createServer((req, res) => {
        let body = '';
        req.on('data', (d: Buffer) => (body += d.toString()));
        req.on('end', () => {
          const request = JSON.parse(body) as { sn: string; time: string; auth: string };
          received.push(request);
          const device = rig.cloud.devices.find((d) => d.sn === request.sn);
          const fresh = Math.abs(Date.parse('2000-01-01T00:00:00Z') / 1000 + Number(request.time) - Date.now() / 1000) < 60;
          const ok = device && fresh && request.auth === referenceHotp(Buffer.from(device.totp_key, 'ascii'), Number(request.time) / 30, 9);
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ success: ok ? 'true' : 'block' }));
        });
      });
      await new Promise<void>((resolve) => thermostat.listen(0, '127.0.0.1', resolve));
      thermostatUrl = `127.0.0.1:${(thermostat.address() as AddressInfo).port}`;
    });
    after(async () => {
      await new Promise<void>((resolve) => thermostat.close(() => resolve()));
      await rig.dispose();
    });

    /** Node-RED's function node: the code as a function of msg, with flow context and node. */
    function runner() {
      const context = new Map<string, unknown>();
      const statuses: unknown[] = [];
      const body = new Function('msg', 'flow', 'node', fn.func ?? '') as (msg: unknown, flowCtx: unknown, node: unknown) => SignedRequest | null;
      const flowCtx = { get: (k: string) => context.get(k), set: (k: string, v: unknown) => context.set(k, v) };
      const node = { status: (s: unknown) => statuses.push(s), warn: () => undefined };
      return { send: (msg: unknown) => body(structuredClone(msg), flowCtx, node), statuses };
    }

    async function send(request: SignedRequest): Promise<{ success: string }> {
      const response = await fetch(request.url, { method: request.method, headers: request.headers, body: JSON.stringify(request.payload) });
      return (await response.json()) as { success: string };
    }

    it('signs a setpoint request with the current code, and the thermostat takes it', async () => {
      const device = rig.cloud.devices[0];
      const sub = await Recorder.connect(rig.broker.url, [`hmarex2mqtt/${device.sn}/totp`]);
      // A code with time to spare (the next one, when the current is about to end).
      const published = await sub.waitFor((m) => m.payload !== '' && Date.parse((JSON.parse(m.payload) as { valid_until: string }).valid_until) - Date.now() > 5000, 'a code', 10_000);
      await sub.close();
      const run = runner();
      assert.equal(run.send({ topic: published.topic, payload: JSON.parse(published.payload) }), null, 'a code alone sends nothing');
      const command = { ...(JSON.parse(inject.payload ?? '{}') as Record<string, unknown>), sn: device.sn, ip: thermostatUrl, setpoint: 22.6 };
      const request = run.send({ topic: '', payload: command });
      assert.ok(request, 'a request');
      const code = JSON.parse(published.payload) as { time: string; auth: string };
      assert.equal(request.url, `http://${thermostatUrl}/api.cgi`);
      assert.equal(request.method, 'POST');
      assert.deepEqual(request.payload, { sn: device.sn, time: code.time, auth: code.auth, par: [[31, 1, '23']] });
      assert.deepEqual(await send(request), { success: 'true' });
    });

    it('holds a command while the code is about to expire and sends it with the next code', async () => {
      const device = rig.cloud.devices[1];
      const run = runner();
      const topic = `hmarex2mqtt/${device.sn}/totp`;
      const expiring = { sn: device.sn, time: '1', auth: '000000000', valid_until: new Date(Date.now() + 1000).toISOString() };
      run.send({ topic, payload: expiring });
      assert.equal(run.send({ topic: '', payload: { sn: device.sn, ip: thermostatUrl, setpoint: 21 } }), null, 'held');
      assert.equal(run.statuses.length, 1, 'the node shows that it waits');
      const sub = await Recorder.connect(rig.broker.url, [topic]);
      const fresh = await sub.waitFor((m) => m.payload !== '', 'a code');
      await sub.close();
      const request = run.send({ topic, payload: JSON.parse(fresh.payload) });
      assert.ok(request, 'sent with the next code');
      assert.equal(request.payload.auth, (JSON.parse(fresh.payload) as { auth: string }).auth);
      assert.deepEqual(await send(request), { success: 'true' });
      assert.equal(run.send({ topic, payload: JSON.parse(fresh.payload) }), null, 'sent once');
    });

    it('forgets a cleared code: after the empty payload of a stopped bridge it signs nothing', () => {
      const run = runner();
      const sn = rig.cloud.devices[0].sn;
      const topic = `hmarex2mqtt/${sn}/totp`;
      const code = { sn, time: '1', auth: '000000000', valid_until: new Date(Date.now() + 20_000).toISOString() };
      const command = { topic: '', payload: { sn, ip: thermostatUrl, setpoint: 21 } };
      run.send({ topic, payload: code });
      assert.ok(run.send(command), 'signed while the code is known');
      assert.equal(run.send({ topic, payload: '' }), null);
      assert.equal(run.send(command), null, 'held after the code was cleared');
    });
  });
});
