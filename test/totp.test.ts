import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { referenceHotp } from './helpers.js';
import { CodeGenerator, decodeKey, EPOCH_2000_MS, KeyError, TERNEO_DEFAULTS, windowAt, type TotpSettings } from '../src/totp.js';

describe('RFC 6238 test vectors (unix epoch, raw ASCII keys, 8 digits)', () => {
  const keys = {
    SHA1: '12345678901234567890',
    SHA256: '12345678901234567890123456789012',
    SHA512: '1234567890123456789012345678901234567890123456789012345678901234',
  } as const;
  const vectors: Array<[number, string, string, string]> = [
    [59, '94287082', '46119246', '90693936'],
    [1111111109, '07081804', '68084774', '25091201'],
    [1111111111, '14050471', '67062674', '99943326'],
    [1234567890, '89005924', '91819424', '93441116'],
    [2000000000, '69279037', '90698825', '38618901'],
    [20000000000, '65353130', '77737706', '47863826'],
  ];
  for (const [seconds, sha1, sha256, sha512] of vectors) {
    for (const [algorithm, expected] of [['SHA1', sha1], ['SHA256', sha256], ['SHA512', sha512]] as const) {
      it(`${algorithm} at T=${seconds} is ${expected}`, () => {
        const settings: TotpSettings = { digits: 8, period: 30, algorithm, key_encoding: 'raw', epoch: 'unix' };
        const generator = new CodeGenerator(decodeKey(keys[algorithm], 'raw'), settings);
        const code = generator.codeAt(seconds * 1000);
        assert.equal(code.auth, expected);
        assert.equal(code.time, String(Math.floor(seconds / 30) * 30));
      });
    }
  }
});

describe('Terneo defaults', () => {
  const key = 'BW4ERXAJXXXXXXXX';
  const generator = new CodeGenerator(decodeKey(key, 'raw'), TERNEO_DEFAULTS);

  it('counts time from 2000-01-01 and gives 9 digits', () => {
    const now = Date.parse('2026-12-03T16:21:41.000Z');
    const code = generator.codeAt(now);
    const seconds2000 = Math.floor((now - EPOCH_2000_MS) / 1000);
    assert.equal(code.time, String(seconds2000 - (seconds2000 % 30)));
    assert.equal(code.auth.length, 9);
    assert.equal(code.validFromMs, Date.parse('2026-12-03T16:21:30.000Z'));
    assert.equal(code.validUntilMs, Date.parse('2026-12-03T16:22:00.000Z'));
  });

  it('matches an independent HMAC-SHA1 computation over raw key bytes and counter time/30', () => {
    for (const iso of ['2000-01-01T00:00:00Z', '2020-02-29T12:00:15Z', '2026-12-03T16:21:41Z', '2099-12-31T23:59:59Z']) {
      const now = Date.parse(iso);
      const code = generator.codeAt(now);
      assert.equal(code.auth, referenceHotp(Buffer.from(key, 'ascii'), Number(code.time) / 30, 9), iso);
    }
  });

  it('hand-checked value: key BW4ERXAJXXXXXXXX, time 849630090', () => {
    // By hand: printf '\x00\x00\x00\x00\x01\xb0\x24\xeb' | openssl dgst -sha1 -mac HMAC -macopt key:BW4ERXAJXXXXXXXX,
    // then RFC 4226 dynamic truncation, mod 10^9 (counter 28321003 = 849630090 / 30).
    assert.equal(generator.codeAt(EPOCH_2000_MS + 849630090 * 1000).auth, '934879857');
    assert.equal(generator.codeAt(EPOCH_2000_MS + 849630090 * 1000).time, '849630090');
  });

  it('base32 decoding and the unix epoch are settings', () => {
    const b32 = new CodeGenerator(decodeKey('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', 'base32'), { ...TERNEO_DEFAULTS, digits: 8, epoch: 'unix' });
    assert.equal(b32.codeAt(59_000).auth, '94287082');
  });

  it('windows are aligned to the period', () => {
    const w = windowAt(EPOCH_2000_MS + 31_999, { period: 30, epoch: '2000' });
    assert.deepEqual([w.counter, w.time, w.validFromMs - EPOCH_2000_MS], [1, '30', 30_000]);
  });
});

describe('key decoding', () => {
  it('refuses empty, non-ASCII and non-base32 keys without quoting them', () => {
    assert.throws(() => decodeKey('', 'raw'), KeyError);
    assert.throws(() => decodeKey('ключ-секрет', 'raw'), (e: Error) => e instanceof KeyError && !e.message.includes('ключ'));
    assert.throws(() => decodeKey('not base32 !!', 'base32'), (e: Error) => e instanceof KeyError && !e.message.includes('base32 !!'));
  });
});
